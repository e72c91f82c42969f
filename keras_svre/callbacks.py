"""Callbacks for GAN training: sample grids, safe checkpoints, non-finite stop."""

from __future__ import annotations

import math
import os
import pathlib

import keras
import numpy as np


def save_image_grid(images: np.ndarray, path, columns: int | None = None) -> None:
    """Writes images in [0, 1] (`[N, H, W, C]`) as one PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        shutil.rmtree(leftover, ignore_errors=True)
    return removed


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

    Under multi-worker training every worker must run this callback (saving
    reads replicated state collectively), each with its own `path`.

    Args:
        path: The `.keras` checkpoint file.
        every_steps: Write a checkpoint every this many iterations (and at the
            end of each epoch). `0` writes at epoch ends only.
    """

    def __init__(self, path, every_steps: int = 0):
        super().__init__()
        if int(every_steps) < 0:
            raise ValueError(
                "Argument `every_steps` must be >= 0. "
                f"Received: every_steps={every_steps}."
            )
        self.path = pathlib.Path(path)
        self.every_steps = int(every_steps)
        self.nonfinite_step = None
        self.saved_step = None
        self._step = 0

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

    def on_train_batch_end(self, batch, logs=None):
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
