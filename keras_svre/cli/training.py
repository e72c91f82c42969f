"""One `keras-svre train` run, step by step: the data and the checks against
it, the networks, the run folder, the callbacks, the epochs, the summary."""

from __future__ import annotations

import json
import sys
import time

import keras

from keras_svre.cli import evaluator as evaluator_lib
from keras_svre.cli import rundir
from keras_svre.cli import strategy as strategy_lib
from keras_svre.cli.common import UsageError


class Training:
    """A run of `keras-svre train` with checked settings.

    `prepare()` loads the data, checks the settings against it and builds
    (or loads) the GAN, touching no file; `run()` then takes the run folder,
    trains and writes the model and the summary.
    """

    def __init__(self, args, config, out, strategy):
        self.args = args
        self.config = config
        self.out = out
        self.strategy = strategy
        # On JAX every step is compiled (Keras' jit_compile=False would run it
        # op by op); --jit is TensorFlow's XLA switch.
        self.jit = args.jit or keras.backend.backend() != "tensorflow"
        worker = strategy_lib.worker_index(strategy)
        self.chief = worker == 0
        # Every worker saves (saving reads replicated state collectively), the
        # chief into --out and the others into a folder of their own.
        self.files = out if self.chief else out / f"worker-{worker}"
        self.checkpoint = self.files / "checkpoint.keras"
        # Whether runs/latest points at this run.
        self.pointed = args.out is None
        self.lock = None
        # When the command started (main sets it; the summary counts from it).
        self.started = getattr(args, "started", time.time())

    # ------------------------------------------------------------------ #
    # Before any file is touched.
    # ------------------------------------------------------------------ #
    def prepare(self):
        """Loads the data, checks the settings against it, builds the GAN."""
        from keras_svre import run

        config = self.config
        keras.utils.set_random_seed(config.seed)
        self.epoch_data = run.EpochData(config, self.args.data_dir)
        try:
            self.finite_sum = self.epoch_data(0)
        except (ValueError, RuntimeError, ImportError) as e:
            raise UsageError(str(e)) from None
        self._describe_folder_data()
        self.replicas = self.strategy.num_replicas_in_sync
        self.phases = config.phases(self.finite_sum.batches_per_epoch)
        try:
            config.check_data(self.finite_sum, self.phases, self.replicas)
        except run.ConfigError as e:
            raise UsageError(e.with_flag_names()) from None
        strategy_lib.check_static_batches(
            self.args, config, self.finite_sum, self.replicas
        )
        keras.mixed_precision.set_global_policy(config.dtype_policy)
        self.gan = self._build_gan()
        try:
            run.current_phase(self.gan, self.phases)
        except ValueError as e:
            raise UsageError(str(e)) from None
        self.evaluates = not self.args.no_evaluate and evaluator_lib.evaluable(
            config, self.finite_sum
        )
        if self.args.evaluate_every and not self.evaluates:
            raise UsageError(
                "--evaluate-every scores with an MNIST classifier, which needs "
                f"28x28 grayscale data, and the {self.finite_sum.name} images are "
                f"{'x'.join(map(str, self.finite_sum.image_shape))}: drop "
                "--evaluate-every (and --best-by) for this dataset"
            )

    def _describe_folder_data(self):
        from keras_svre import data

        config, finite_sum = self.config, self.finite_sum
        if not (config.dataset.startswith(data.FOLDER_PREFIX) and self.chief):
            return
        height, width, channels = finite_sum.image_shape
        colour = "grayscale" if channels == 1 else "colour"
        say(
            f"{finite_sum.num_examples} images of {config.dataset}, centre-cropped "
            f"and resized to {height}x{width} {colour} for --architecture "
            f"{config.architecture}"
        )

    def _build_gan(self):
        from keras_svre import run

        with self.strategy.scope():
            if self.args.resume:
                gan = _load_checkpoint(self.out / "checkpoint.keras", self.finite_sum)
            else:
                try:
                    gan = self.config.build_gan(
                        self.finite_sum.num_examples, self.phases[0], self.jit
                    )
                except run.ConfigError as e:
                    raise UsageError(e.with_flag_names()) from None
            if self.args.strategy != "default":
                from keras_svre import distribute

                # Global-batch statistics: training does not depend on the split.
                distribute.synchronize_batch_norm(gan.generator, gan.discriminator)
        return gan

    # ------------------------------------------------------------------ #
    # Training.
    # ------------------------------------------------------------------ #
    def run(self) -> dict:
        """Takes the run folder, trains, and writes the model and the summary."""
        from keras_svre import callbacks, run

        # Every check passed: only now is the run folder written to.
        self.lock = rundir.prepare(
            self.out,
            self.files,
            self.config,
            self.args.resume,
            self.args.overwrite,
            self.chief,
            self.pointed,
        )
        guard = callbacks.GuardedCheckpoint(
            self.checkpoint, self.args.checkpoint_every, keep=self.args.keep_checkpoints
        )
        self.evaluator = (
            evaluator_lib.Evaluator(self.config.seed, self.finite_sum.snapshot)
            if self.evaluates
            else None
        )
        self.tensorboard = None
        report, _ = run.train_phases(
            self.gan,
            self.config,
            self.phases,
            self.epoch_data,
            callbacks=[guard, *self._callbacks()],
            verbose=self.args.verbose,
            jit_compile=self.jit,
            strategy=self.strategy,
            on_switch=lambda phase: say(
                f"warm start done; switching to {phase.method.name}"
            ),
            checkpoint=self.checkpoint,
        )
        if guard.nonfinite_step is not None:
            where = f"{self.checkpoint}"
            if guard.saved_step is not None:
                where += f" (iteration {guard.saved_step})"
            raise UsageError(
                "a loss or weight became non-finite at iteration "
                f"{guard.nonfinite_step}; training stopped. The last good checkpoint "
                f"is {where}. Try a smaller learning rate."
            )
        return self._finish(report)

    def _callbacks(self) -> list:
        from keras_svre import callbacks

        args, files = self.args, self.files
        cbs = []
        if self.chief:
            cbs += [
                callbacks.SampleGrid(files, seed=self.config.seed),
                keras.callbacks.CSVLogger(str(files / "metrics.csv"), append=True),
            ]
        if args.verbose:
            # Before the measurements: the bar shows the losses and the counts.
            cbs.append(_progress_bar(self.phases[-1].last_epoch))
        if args.evaluate_every:
            evaluator = self.evaluator
            cbs.append(
                callbacks.EpochEvaluation(
                    lambda gan: evaluator_lib.flat_evaluation(evaluator(gan)),
                    args.evaluate_every,
                )
            )
        if args.best_by is not None:
            mode = "max" if BEST_BY[args.best_by] else "min"
            cbs.append(
                callbacks.BestCheckpoint(files / "best.keras", args.best_by, mode)
            )
        self.tensorboard = self._tensorboard()
        if args.gradient_noise_every:
            cbs += self._gradient_noise()
        if self.tensorboard is not None:
            cbs.append(self.tensorboard)
        return cbs

    def _tensorboard(self):
        from keras_svre import callbacks

        args = self.args
        if not self.chief or args.no_tensorboard:
            return None
        if not can_write_tensorboard(args):
            print(
                "keras-svre train: no TensorBoard logs (writing them needs "
                "TensorFlow or tensorboardX, and neither is installed)"
            )
            return None
        return callbacks.TensorBoardLogger(
            args.tensorboard or self.files / "tensorboard",
            update_freq=args.log_every,
            generators=("ema", "average", "current"),
            seed=self.config.seed,
        )

    def _gradient_noise(self) -> list:
        """`--gradient-noise-every N`: the measurement, and its writer."""
        from keras_svre import evaluation

        config = self.config
        # A pipeline of its own: drawing from the training one would change
        # the order training reads.
        noise_data = config.replace(seed=config.seed + 1).load_data(
            0, self.args.data_dir
        )
        noise = evaluation.GradientVariance(
            noise_data.train, self.args.gradient_noise_every
        )
        if self.tensorboard is None:
            return [noise]
        return [noise, _MeasurementsToTensorBoard(noise, self.tensorboard)]

    # ------------------------------------------------------------------ #
    # After training.
    # ------------------------------------------------------------------ #
    def _finish(self, report) -> dict:
        from keras_svre import callbacks

        config, files = self.config, self.files
        summary = {
            "dataset": config.dataset,
            "method": config.method,
            "backend": keras.backend.backend(),
            "strategy": self.args.strategy,
            "replicas": self.replicas,
            "iterations": sum(r["iterations"] for r in report),
            "minibatch_evaluations": sum(r["minibatch_evaluations"] for r in report),
            "snapshots": sum(r["snapshots"] for r in report),
            "phases": report,
            "training_seconds": round(time.time() - self.started, 1),
        }
        if self.chief:
            summary["final_losses"] = final_losses(files / "metrics.csv")
            summary.update(
                evaluation_summary(
                    config,
                    self.args,
                    self.evaluator,
                    self.gan,
                    self.tensorboard,
                    summary["iterations"],
                    self.checkpoint,
                )
            )
        callbacks.save_atomically(self.gan, files / "model.keras")
        summary["seconds"] = round(time.time() - self.started, 1)
        if not self.chief:
            return summary
        (files / "metrics.json").write_text(json.dumps(summary, indent=1))
        print_summary(summary, self.out, self.pointed)
        return summary


def _progress_bar(epochs):
    """Keras' progress bar, counting the run's epochs (one `fit` call each)."""

    class RunProgbar(keras.callbacks.ProgbarLogger):
        def set_params(self, params):
            super().set_params({**params, "epochs": epochs})

    return RunProgbar()


class _MeasurementsToTensorBoard(keras.callbacks.Callback):
    """Writes each measurement of a periodic measurement (`evaluation`'s
    `GradientVariance`) to TensorBoard at the iteration it was taken, not only
    the epoch's last one at the epoch's end, and keeps them out of the epoch's
    logs, which TensorBoard would write again at another step."""

    def __init__(self, measurement, tensorboard):
        super().__init__()
        self.measurement = measurement
        self.tensorboard = tensorboard
        self.written = 0
        self.keys = set()

    def on_train_batch_end(self, batch, logs=None):
        records = self.measurement.records
        for record in records[self.written :]:
            values = {k: v for k, v in record.items() if k.startswith("grad_")}
            self.keys.update(values)
            self.tensorboard.write_scalars(values, record["iteration"])
        self.written = len(records)

    def on_epoch_end(self, epoch, logs=None):
        self.on_train_batch_end(None)
        for key in self.keys:
            (logs or {}).pop(key, None)


def _load_checkpoint(path, finite_sum):
    import keras_svre  # noqa: F401  (registers the classes for loading)
    from keras_svre.cli.common import check_intact

    if not path.exists():
        raise UsageError(f"nothing to resume: no checkpoint {path}")
    check_intact(path)
    try:
        gan = keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 - any load failure is the file's
        raise UsageError(f"could not load the checkpoint {path}: {e}") from None
    if gan.num_examples != finite_sum.num_examples:
        raise UsageError(
            f"the checkpoint {path} was trained on {gan.num_examples} examples but "
            f"the data has {finite_sum.num_examples}"
        )
    return gan


# The measures --best-by takes, and whether higher is better.
BEST_BY = {
    "inception_score": True,
    "fid": False,
    "entropy": True,
    "total_variation": False,
    "l2": False,
}


def final_losses(csv_path) -> dict:
    import csv

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    from keras_svre import run

    # Keras' CSVLogger writes "NA" for validation columns when there is none.
    skip = ("epoch", *run.COUNTS)
    return {k: float(v) for k, v in rows[-1].items() if k not in skip and v != "NA"}


def can_write_tensorboard(args) -> bool:
    """Whether TensorBoard logs can be written (they need TensorFlow's writer
    or tensorboardX's).

    Without either (the JAX backend alone), the default logs are left out;
    an explicit `--tensorboard DIR` is an error.
    """
    from keras_svre import summaries

    if summaries.available():
        return True
    if args.tensorboard is not None:
        raise UsageError(
            "--tensorboard needs TensorFlow or tensorboardX, and neither is "
            'installed: pip install "keras-svre[jax]", or drop --tensorboard'
        )
    return False


def print_summary(summary, out, pointed):
    print(json.dumps(summary))
    print(rundir.where_the_run_is(out, pointed))


def say(message):
    """A line about the run, on stderr (stdout holds the summary)."""
    print(f"keras-svre train: {message}", file=sys.stderr)


def evaluation_summary(
    config, args, evaluator, gan, tensorboard, iterations, checkpoint=None
):
    """The final evaluation's part of the summary (the best generator is made
    the GAN's default).

    If the evaluation fails, the trained game is saved to `checkpoint` first
    (`keras_svre.run.after_training`).
    """
    from keras_svre import data, run

    if config.dataset.startswith(data.FOLDER_PREFIX) and not args.no_evaluate:
        return {
            "evaluation": {
                "skipped": "the Inception Score uses an MNIST classifier, which "
                "says nothing of a folder of your own images"
            }
        }
    if evaluator is None:
        return {}
    evaluation = run.after_training("the final evaluation", evaluator, gan, checkpoint)
    if tensorboard is not None:
        tensorboard.write_scalars(evaluator_lib.flat_evaluation(evaluation), iterations)
    # `keras-svre sample` (and `gan.generate()`) then draw from the
    # generator that scored best.
    gan.default_generator = evaluation.get("best", gan.default_generator)
    # (An evaluated last epoch is not evaluated twice.)
    return {
        "evaluation": evaluation,
        "evaluation_seconds": round(evaluator.seconds, 1),
    }
