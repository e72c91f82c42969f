"""Callbacks for GAN training: sample grids, safe checkpoints, non-finite stop."""

from __future__ import annotations

import json
import math
import os
import pathlib

import keras
import numpy as np


def image_grid(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Images in [0, 1] (`[N, H, W, C]`) tiled into one `[H', W', C]` image.

    Each image gets a 1-pixel white border; `columns` defaults to a square.
    """
    images = np.clip(np.asarray(images, dtype="float32"), 0.0, 1.0)
    n, h, w, c = images.shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    grid = np.ones((rows * (h + 2), columns * (w + 2), c), dtype="float32")
    for k, image in enumerate(images):
        r, q = divmod(k, columns)
        grid[
            r * (h + 2) + 1 : r * (h + 2) + 1 + h, q * (w + 2) + 1 : q * (w + 2) + 1 + w
        ] = image
    return grid


def save_image_grid(images: np.ndarray, path, columns: int | None = None) -> None:
    """Writes images in [0, 1] (`[N, H, W, C]`) as one PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = image_grid(images, columns)
    c = grid.shape[-1]
    if c == 1:
        grid = grid[..., 0]
    plt.imsave(str(path), grid, cmap="gray" if c == 1 else None, vmin=0.0, vmax=1.0)


class SampleGrid(keras.callbacks.Callback):
    """Saves a PNG grid of generated images at the end of each epoch.

    The same latent vectors are used every time, so the grids show how the
    generator evolves.

    Args:
        directory: Output folder; files are `samples_epoch_{epoch:03d}.png`.
        num_images: Number of images in the grid. Defaults to `64`.
        which: Generator to sample: `"ema"` (default), `"average"` or
            `"current"`.
        seed: Seed of the fixed latent vectors.
    """

    def __init__(self, directory, num_images: int = 64, which: str = "ema", seed=0):
        super().__init__()
        self.directory = pathlib.Path(directory)
        self.num_images = num_images
        self.which = which
        self.seed = seed
        self._latents = None

    def on_epoch_end(self, epoch, logs=None):
        if self._latents is None:
            rng = np.random.default_rng(self.seed)
            self._latents = rng.standard_normal(
                (self.num_images, self.model.latent_dim)
            ).astype("float32")
        self.directory.mkdir(parents=True, exist_ok=True)
        images = self.model.generate(self._latents, which=self.which)
        save_image_grid(
            (images + 1.0) / 2.0, self.directory / f"samples_epoch_{epoch + 1:03d}.png"
        )


class TensorBoardLogger(keras.callbacks.Callback):
    """Writes a GAN's training to TensorBoard (TensorFlow's writer, or tensorboardX's).

    - Every `update_freq` iterations: each of the model's metrics (the
      game's losses) as its mean over the iterations since the last write,
      and the run's counts when the logs have them (`iterations`,
      `minibatch_evaluations`, `snapshots`; `keras_svre.run.train_phases`
      adds them).
    - At each epoch end: the rest of the epoch's logs (what callbacks listed
      before this one measured, e.g. the Inception Score or the gradient
      noise), and a grid of `num_images` samples of each generator in
      `generators` (the same latent vectors every time), tagged
      `samples/<generator>`.

    The step is the run's iteration: the `iterations` log when there is one,
    else the model's iteration count. `write_scalars` adds values measured
    outside `fit` (a final evaluation). `tensorboard --logdir LOG_DIR` shows
    them.

    Args:
        log_dir: The folder of the event files.
        update_freq: Write the losses every this many iterations. Defaults
            to 10.
        generators: The generators whose samples are shown: names from
            `("current", "average", "ema")`. Defaults to `("ema",)`.
        num_images: Images per grid. Defaults to 64.
        seed: Seed of the grids' latent vectors.
    """

    _COUNTS = ("iterations", "minibatch_evaluations", "snapshots")

    def __init__(
        self,
        log_dir,
        update_freq: int = 10,
        generators=("ema",),
        num_images: int = 64,
        seed: int = 0,
    ):
        super().__init__()
        if isinstance(update_freq, bool) or int(update_freq) < 1:
            raise ValueError(
                "Argument `update_freq` must be a positive integer. "
                f"Received: update_freq={update_freq!r}."
            )
        self.log_dir = pathlib.Path(log_dir)
        self.update_freq = int(update_freq)
        self.generators = tuple(generators)
        self.num_images = int(num_images)
        self.seed = seed
        self._writer = None
        self._latents = None
        self._last_step = None
        self._batches = 0
        # The running means' state at the last write: (batches, {key: mean}).
        self._window_start = (0, {})

    @property
    def writer(self):
        """The summary writer (made on first use)."""
        if self._writer is None:
            from keras_svre import summaries

            # TensorFlow's writer, or tensorboardX's without TensorFlow.
            self._writer = summaries.create_writer(self.log_dir)
        return self._writer

    def write_scalars(self, values: dict, step: int) -> None:
        """Writes `{tag: value}` at `step` (non-numbers are skipped)."""
        numbers = {
            tag: value
            for tag, value in values.items()
            if isinstance(value, (int, float, np.number))
        }
        self.writer.scalars(numbers, step)
        self.writer.flush()

    def _step(self, logs) -> int:
        if logs and "iterations" in logs:
            return int(logs["iterations"])
        return _model_iterations(self.model)

    def _loss_names(self):
        return [m.name for m in self.model.metrics]

    def on_epoch_begin(self, epoch, logs=None):
        # Keras resets the metrics' running means at each epoch.
        self._window_start = (0, {})
        self._batches = 0

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        self._batches = batch + 1
        step = self._step(logs)
        previous = step - 1 if self._last_step is None else self._last_step
        self._last_step = step
        # Several iterations per batch (`steps_per_execution`) may pass a
        # multiple of `update_freq` without landing on it.
        if step // self.update_freq > previous // self.update_freq:
            self._write_window(batch + 1, logs, step)

    def _write_window(self, batches, logs, step):
        """The losses' means since the last write, from Keras' running means.

        After k batches of an epoch a metric logs m_k, the mean of its k
        values; the mean of batches j+1..k is (k m_k - j m_j) / (k - j).
        """
        start, means = self._window_start
        if batches <= start:
            return
        values = {}
        for name in self._loss_names():
            if name in logs:
                total = batches * logs[name] - start * means.get(name, 0.0)
                values[name] = total / (batches - start)
        values.update({k: logs[k] for k in self._COUNTS if k in logs})
        self.write_scalars(values, step)
        names = self._loss_names()
        self._window_start = (batches, {k: logs[k] for k in names if k in logs})

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = self._step(logs)
        self._write_window(self._batches, logs, step)
        skip = set(self._loss_names()) | set(self._COUNTS)
        self.write_scalars({k: v for k, v in logs.items() if k not in skip}, step)
        self._write_samples(step)

    def _write_samples(self, step):
        if not self.generators:
            return
        if self._latents is None:
            rng = np.random.default_rng(self.seed)
            self._latents = rng.standard_normal(
                (self.num_images, self.model.latent_dim)
            ).astype("float32")
        for which in self.generators:
            images = (self.model.generate(self._latents, which=which) + 1.0) / 2.0
            self.writer.image(f"samples/{which}", image_grid(images), step)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()


def _model_iterations(model) -> int:
    """Iterations done: a game's, or a plain model's optimizer's."""
    if hasattr(model, "game_optimizers"):
        return int(model.iterations)
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


def save_atomically(model: keras.Model, path) -> None:
    """`model.save(path)` through a private temporary file and an atomic rename.

    The file is written into a temporary folder next to `path` (`model.save`
    needs a `.keras` name), flushed to disk, then renamed over `path`. A
    process killed while saving leaves the previous file intact, never a
    half-written one under the real name; the temporary folder it may leave
    is removed by `remove_partial_saves`.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.parent / f"{_PARTIAL_PREFIX}{path.name}-{os.getpid()}"
    partial.mkdir(exist_ok=True)
    tmp = partial / path.name
    model.save(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    partial.rmdir()
    _fsync_directory(path.parent)


_PARTIAL_PREFIX = ".partial-"


def remove_partial_saves(directory) -> list:
    """Deletes what interrupted `save_atomically` calls left in `directory`.

    Returns:
        The paths removed.
    """
    import shutil

    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    removed = sorted(directory.glob(f"{_PARTIAL_PREFIX}*"))
    for leftover in removed:
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return removed


def _copy_atomically(source, path) -> None:
    """`path` becomes a copy of the file `source` (a hard link where possible),
    through a temporary name and an atomic rename."""
    import shutil

    path = pathlib.Path(path)
    partial = path.parent / f"{_PARTIAL_PREFIX}{path.name}-{os.getpid()}"
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:  # No hard links on this file system.
        shutil.copyfile(source, partial)
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
    os.replace(partial, path)
    _fsync_directory(path.parent)


def _fsync_directory(directory) -> None:
    # Makes the rename itself durable (POSIX); not possible everywhere.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss or gradient became NaN or infinite.

    `Game.fit` raises it; the failing iteration was not applied.
    """


class GuardedCheckpoint(keras.callbacks.Callback):
    """Checkpoints every N iterations while training is finite; stops on NaN/inf.

    A checkpoint is the whole game saved as a `.keras` file: the networks,
    the optimizers' state (for SVRE the snapshot, its mean gradient and the
    snapshot count; Adam's moments; the iteration count), the GAN's noise bank
    and averaged generators, and the game's restart-draw counter. Loading it
    and training on continues the run exactly (see `keras-svre train
    --resume`). Checkpoints are written atomically (`save_atomically`): a run
    killed at any moment leaves the previous complete checkpoint.

    One is also written when training begins if none exists yet, so that a
    run that fails early still leaves a state to go back to. On a non-finite
    loss or weight, training stops at once and the last checkpoint (whose
    losses and weights were all finite) is left in place; `nonfinite_step`
    says at which iteration it happened.

    With `keep`, the last `keep` checkpoints are also kept in the folder
    `checkpoints/` next to `path`, named by the run's iteration
    (`checkpoint-00000120.keras`; the `iterations` log when there is one,
    as `keras_svre.run.train_phases` adds, else the model's iteration
    count); older ones are deleted. `path` is always the latest.

    Under multi-worker training every worker must run this callback (saving
    reads replicated state collectively), each with its own `path`.

    Args:
        path: The `.keras` checkpoint file.
        every_steps: Write a checkpoint every this many iterations (and at the
            end of each epoch). `0` writes at epoch ends only.
        keep: How many of the latest checkpoints to keep in `checkpoints/`.
            Defaults to `0`: only `path`.
    """

    def __init__(self, path, every_steps: int = 0, keep: int = 0):
        super().__init__()
        if int(every_steps) < 0:
            raise ValueError(
                "Argument `every_steps` must be >= 0. "
                f"Received: every_steps={every_steps}."
            )
        if int(keep) < 0:
            raise ValueError(f"Argument `keep` must be >= 0. Received: keep={keep}.")
        self.path = pathlib.Path(path)
        self.every_steps = int(every_steps)
        self.keep = int(keep)
        self.nonfinite_step = None
        self.saved_step = None
        self._step = 0
        self._run_step = None

    @property
    def kept_directory(self) -> pathlib.Path:
        """The folder of the kept checkpoints."""
        return self.path.parent / "checkpoints"

    def kept(self) -> list[pathlib.Path]:
        """The kept checkpoints, oldest first."""
        pattern = f"{self.path.stem}-*{self.path.suffix}"
        found = []
        for file in self.kept_directory.glob(pattern):
            number = file.name[len(self.path.stem) + 1 : -len(self.path.suffix)]
            if number.isdigit():
                found.append((int(number), file))
        return [file for _, file in sorted(found)]

    def on_train_begin(self, logs=None):
        self.nonfinite_step = None
        self._step = self.model.iterations
        if not self.path.exists():
            self._save()

    @staticmethod
    def _finite(logs):
        return all(np.all(np.isfinite(v)) for v in (logs or {}).values())

    def _weights_finite(self):
        return all(np.all(np.isfinite(v.numpy())) for v in self.model.weights)

    def _stop(self, failed=None):
        self.nonfinite_step = self._step if failed is None else failed
        self.model.stop_training = True

    def _note_run_step(self, logs):
        if logs and "iterations" in logs:
            self._run_step = int(logs["iterations"])

    def on_train_batch_end(self, batch, logs=None):
        self._note_run_step(logs)
        previous, self._step = self._step, self.model.iterations
        if not self._finite(logs):
            # A game skips a non-finite iteration (its count does not
            # advance): the failing one is the next.
            self._stop(self._step + 1 if self._step == previous else self._step)
            return
        if self.every_steps and (
            self._step // self.every_steps > previous // self.every_steps
        ):
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        self._note_run_step(logs)
        if self.nonfinite_step is None and self.saved_step != self._step:
            if self._finite(logs):
                self._save()
            else:
                self._stop()

    def _save(self):
        if not self._weights_finite():
            self._stop()
            return
        save_atomically(self.model, self.path)
        self.saved_step = self._step
        if self.keep:
            self._keep_latest()

    def _keep_latest(self):
        step = self._step if self._run_step is None else self._run_step
        self.kept_directory.mkdir(parents=True, exist_ok=True)
        name = f"{self.path.stem}-{step:08d}{self.path.suffix}"
        _copy_atomically(self.path, self.kept_directory / name)
        for old in self.kept()[: -self.keep]:
            old.unlink(missing_ok=True)


class EpochEvaluation(keras.callbacks.Callback):
    """Adds `evaluate(model)`'s values to the logs of every `every`-th epoch.

    The callbacks listed after this one (`BestCheckpoint`,
    `TensorBoardLogger`, `History`) see them.

    Args:
        evaluate: `model -> {key: value}`.
        every: Evaluate at the end of every this many epochs. Defaults to 1.
    """

    def __init__(self, evaluate, every: int = 1):
        super().__init__()
        if isinstance(every, bool) or int(every) < 1:
            raise ValueError(
                "Argument `every` must be a positive integer. "
                f"Received: every={every!r}."
            )
        self.evaluate = evaluate
        self.every = int(every)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and (epoch + 1) % self.every == 0:
            logs.update(self.evaluate(self.model))


class BestCheckpoint(keras.callbacks.Callback):
    """Keeps the checkpoint that scored best on a measure, written atomically.

    At each epoch end whose logs hold the measure (callbacks listed before
    this one put it there, e.g. an evaluation), the model is saved to `path`
    (`save_atomically`) if it improved on the best so far; `path` with the
    suffix `.json` records the value, the run's iteration and, for a measure
    of several generators, the one that scored it. The best so far is read
    back from that file, so a resumed run only replaces a better checkpoint.

    Args:
        path: The `.keras` file.
        monitor: A log key (`"fid_ema"`), or a measure of the generators
            (`"fid"`: the best of `fid_current`, `fid_average` and `fid_ema`;
            the saved GAN then samples that generator by default).
        mode: `"max"` (higher is better) or `"min"`.
    """

    def __init__(self, path, monitor: str, mode: str):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(
                f"Argument `mode` must be 'min' or 'max'. Received: mode={mode!r}."
            )
        self.path = pathlib.Path(path)
        self.monitor = monitor
        self.mode = mode
        self.record_path = self.path.with_suffix(".json")
        self.best = None
        if self.record_path.exists():
            record = json.loads(self.record_path.read_text())
            if record.get("monitor") == monitor:
                self.best = record["value"]

    def _better(self, value, than) -> bool:
        return than is None or (value > than if self.mode == "max" else value < than)

    def _candidates(self, logs) -> dict:
        """`{generator or None: value}` of the monitored measure in `logs`."""
        if self.monitor in logs:
            return {None: logs[self.monitor]}
        # In this order, a tie goes to the EMA (as in `keras-svre train`).
        generators = ("ema", "average", "current")
        keys = {g: f"{self.monitor}_{g}" for g in generators}
        return {g: logs[key] for g, key in keys.items() if key in logs}

    def on_epoch_end(self, epoch, logs=None):
        candidates = {
            g: float(v)
            for g, v in self._candidates(logs or {}).items()
            if math.isfinite(float(v))
        }
        if not candidates:
            return
        generator, value = None, None
        for g, v in candidates.items():
            if self._better(v, value):
                generator, value = g, v
        if not self._better(value, self.best):
            return
        model = self.model
        default = getattr(model, "default_generator", None)
        if generator is not None and default is not None:
            model.default_generator = generator
        try:
            save_atomically(model, self.path)
        finally:
            if default is not None:
                model.default_generator = default
        self.best = value
        step = (logs or {}).get("iterations")
        step = _model_iterations(model) if step is None else int(step)
        record = {"monitor": self.monitor, "value": value, "iteration": step}
        if generator is not None:
            record["generator"] = generator
        _write_text_atomically(self.record_path, json.dumps(record, indent=1))


def _write_text_atomically(path, text) -> None:
    partial = path.parent / f"{_PARTIAL_PREFIX}{path.name}-{os.getpid()}"
    partial.write_text(text)
    os.replace(partial, path)


# ---------------------------------------------------------------------- #
# What `Game.fit` adds to the user's callbacks.
# ---------------------------------------------------------------------- #
_LR_CALLBACKS = (
    keras.callbacks.LearningRateScheduler,
    keras.callbacks.ReduceLROnPlateau,
)


def for_game(game, callbacks) -> list:
    """The callbacks `Game.fit` runs: the user's, adapted to a game, then its own.

    Monitors of the game's losses get `mode="min"` (as Keras' compiled losses
    do); learning-rate callbacks act on every player's optimizer
    (`EveryPlayer`); `StopOnNonFinite` comes last.
    """
    callbacks = list(callbacks or [])
    loss_names = ["loss"] + [f"{name}_loss" for name in game.player_names]
    for i, callback in enumerate(callbacks):
        if getattr(callback, "mode", None) == "auto" and isinstance(
            getattr(callback, "monitor", None), str
        ):
            if callback.monitor.removeprefix("val_") in loss_names:
                callback.mode = "min"
        if len(game.game_optimizers) > 1 and isinstance(callback, _LR_CALLBACKS):
            callbacks[i] = EveryPlayer(callback)
    # Last, so that the user's callbacks (checkpoints, TerminateOnNaN) see the
    # failing batch first.
    callbacks.append(StopOnNonFinite())
    return callbacks


class _AllOptimizers:
    """What Keras' learning-rate callbacks look for to act on several optimizers."""

    def __init__(self, optimizers):
        self.optimizers = list(optimizers)

    @property
    def learning_rate(self):
        return self.optimizers[0].learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        for opt in self.optimizers:
            opt.learning_rate = value


class _GameView:
    """The game, except that `optimizer` is every player's optimizer."""

    def __init__(self, game):
        object.__setattr__(self, "_game", game)
        object.__setattr__(self, "optimizer", _AllOptimizers(game.game_optimizers))

    def __getattr__(self, name):
        return getattr(self._game, name)

    def __setattr__(self, name, value):
        setattr(self._game, name, value)


class EveryPlayer(keras.callbacks.Callback):
    """Runs a learning-rate callback on every player's optimizer.

    `LearningRateScheduler` and `ReduceLROnPlateau` act on each optimizer in
    `model.optimizer.optimizers` when there is such a list; this gives them
    one, through a view of the game. `Game.fit` wraps them in it.
    """

    def __init__(self, callback):
        super().__init__()
        self.callback = callback

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(_GameView(model))

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)


def _forward(hook):
    def method(self, *args, **kwargs):
        return getattr(self.callback, hook)(*args, **kwargs)

    method.__name__ = hook
    return method


for _hook in [name for name in dir(keras.callbacks.Callback) if name.startswith("on_")]:
    setattr(EveryPlayer, _hook, _forward(_hook))


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops `fit` when an iteration was non-finite, then raises `NonFiniteLossError`.

    `Game.fit` adds it last. Training stops after the failing batch; the
    error is raised at the end of training, once every callback has closed
    what it holds (log files, for instance).
    """

    def on_train_begin(self, logs=None):
        self.error = None

    def on_train_end(self, logs=None):
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.error is not None or loss is None or np.all(np.isfinite(loss)):
            return
        game = self.model
        failed = game.iterations + 1
        bad = [
            name
            for name in game.player_names
            if not np.all(np.isfinite(logs.get(f"{name}_loss", 0.0)))
        ]
        what = (
            f"the loss of {', '.join(bad)}" if bad else "a gradient"
        ) + " was NaN or infinite"
        weights_ok = all(np.all(np.isfinite(v.numpy())) for v in game.game_variables)
        kept = (
            f"the iteration was not applied: the game holds the weights after "
            f"iteration {failed - 1}"
            if weights_ok
            else "the weights are already non-finite (an update overflowed): "
            "reload a checkpoint"
        )
        self.error = NonFiniteLossError(
            f"Training stopped at iteration {failed}: {what}; {kept}. Check the "
            "data for NaN or infinite values, or use a smaller learning rate."
        )
        self.model.stop_training = True
