"""Callbacks that measure a GAN while it trains: sample quality and gradient noise.

- `GeneratorEvaluation`: every K iterations (and at the end of training),
  the Inception Score, the FID against real data and the label-histogram
  measures (`keras_svre.metrics`) of samples from the current, averaged and
  EMA generators; optionally keeps the best generator.
- `GradientVariance`: every K iterations, at the current (fixed) point, the
  method's gradient estimate (`Game.gradient_estimate`) on M minibatches, and
  per player its average second moment `E||d||^2` and its variance across
  minibatches `E||d - E d||^2`: the variance reduction made visible (the
  SVRE paper's poster shows SE-A at ~20-30 and SVRE at ~0 on MNIST).

Both write what they measure into the logs of the epoch in which they
measured it (so Keras' `History` has it, and so do the callbacks listed after
them), keep it in `records`, and optionally append it to a JSON-lines file
and write it to TensorBoard.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import time
import warnings
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_svre import metrics, summaries
from keras_svre.data import to_unit_range

GENERATORS = ("current", "average", "ema")
"""The generators a `keras_svre.GAN` can sample from (`GAN.generate(which=)`)."""

# Short names of the quality measures in log keys ("is_average", "fid_ema").
_QUALITY_KEYS = {
    "inception_score": "is",
    "inception_score_std": "is_std",
    "fid": "fid",
    "entropy": "entropy",
    "total_variation": "total_variation",
    "l2": "l2",
}


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"Argument `{name}` must be a positive integer. Received: {name}={value!r}."
        )


def _training_iterations(model) -> int:
    """Iterations done so far (a game's, or a plain model's optimizer's)."""
    if hasattr(model, "game_optimizers"):
        return model.iterations
    return int(model.optimizer.iterations.numpy())


def _snapshots_taken(model) -> int | None:
    """Snapshots taken so far; `None` for methods without snapshots."""
    if not getattr(model, "variance_reduced", False):
        return None
    return model.snapshots_taken


class _PeriodicMeasurement(keras.callbacks.Callback):
    """Runs `measure()` every `every` iterations and logs what it returns.

    Subclasses implement `measure() -> dict[str, float]` and may override
    `setup()` (called once, at the first `on_train_begin`). With several
    iterations per `fit` execution (`steps_per_execution`), a measurement is
    taken whenever a multiple of `every` was passed.
    """

    # Whether a measurement is also taken when training ends.
    _measure_at_end = False

    def __init__(
        self,
        every: int,
        log_path=None,
        tensorboard_dir=None,
        measure_on_train_begin: bool = False,
    ):
        super().__init__()
        _check_positive_int("every", every)
        self.every = int(every)
        self.log_path = None if log_path is None else pathlib.Path(log_path)
        self.tensorboard_dir = (
            None if tensorboard_dir is None else pathlib.Path(tensorboard_dir)
        )
        self.measure_on_train_begin = bool(measure_on_train_begin)
        self.records: list[dict] = []
        self._is_set_up = False
        self._writer = None
        self._last_iteration = None
        self._measured_iteration = None
        self._epoch = 0
        self._epoch_logs: dict[str, float] = {}
        self._start_time = None

    # What a subclass provides.
    def setup(self) -> None:
        """One-time preparation, once the model is known."""

    def measure(self) -> dict[str, float]:
        raise NotImplementedError

    # Keras hooks.
    def on_train_begin(self, logs=None):
        if not self._is_set_up:
            self.setup()
            self._is_set_up = True
        if self._start_time is None:
            self._start_time = time.time()
        self._last_iteration = _training_iterations(self.model)
        if self.measure_on_train_begin and self._last_iteration == 0:
            self._measure_and_log()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = int(epoch)
        self._epoch_logs = {}

    def on_train_batch_end(self, batch, logs=None):
        now = _training_iterations(self.model)
        previous, self._last_iteration = self._last_iteration, now
        if now // self.every > previous // self.every:
            self._measure_and_log()

    def on_epoch_end(self, epoch, logs=None):
        last_epoch = epoch + 1 >= (self.params or {}).get("epochs", math.inf)
        if self._measure_at_end and (last_epoch or self.model.stop_training):
            # Measured here rather than in `on_train_end` so that the final
            # values reach this epoch's logs, and with them the History.
            self._measure_if_new()
        if logs is not None:
            logs.update(self._epoch_logs)

    def on_train_end(self, logs=None):
        if self._measure_at_end:
            self._measure_if_new()
        if self._writer is not None:
            self._writer.flush()

    # Logging.
    def _measure_if_new(self):
        if self._measured_iteration != _training_iterations(self.model):
            self._measure_and_log()

    def _measure_and_log(self) -> dict:
        iteration = _training_iterations(self.model)
        start = time.time()
        values = {k: float(v) for k, v in self.measure().items()}
        self._measured_iteration = iteration
        self._epoch_logs.update(values)
        record = {
            "iteration": iteration,
            "epoch": self._epoch,
            "seconds": round(time.time() - self._start_time, 3),
            "measure_seconds": round(time.time() - start, 3),
        }
        snapshots = _snapshots_taken(self.model)
        if snapshots is not None:
            record["snapshots"] = snapshots
        record.update(values)
        self.records.append(record)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            finite = {
                k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                for k, v in record.items()
            }
            with open(self.log_path, "a") as f:
                f.write(json.dumps(finite) + "\n")
        if self.tensorboard_dir is not None:
            if self._writer is None:
                self._writer = summaries.create_writer(self.tensorboard_dir)
            self._writer.scalars(values, iteration)
            self._writer.flush()
        return record


class GeneratorEvaluation(_PeriodicMeasurement):
    """Evaluates a GAN's samples every K iterations: IS, FID and label histogram.

    At every K-th iteration and at the end of training, `num_samples` images
    are drawn from each of the current, the averaged and the EMA generators
    (`GAN.generate`, with the same latent vectors every time) and scored with
    an evaluation classifier (`keras_svre.metrics`): the Inception Score
    (mean and std over `splits`), the FID against the classifier's features
    of the real images (their statistics are computed once), and the
    entropy, total variation and L2 distance to uniform of the predicted
    labels. The keys are `<measure>_<generator>`: `is_average`,
    `is_std_ema`, `fid_current`, `entropy_average`, `total_variation_ema`,
    `l2_current`, ...; with several classifiers (a mapping), the
    classifier's name is appended (`is_average_paper`).

    The values go into the logs of the epoch in which they were measured (so
    `History` has them for those epochs), into `records` (one dict per
    evaluation, with the iteration, epoch, seconds since the start of
    training and, for SVRE, the number of snapshots taken), and optionally
    into a JSON-lines file (one line per evaluation; non-finite values are
    written as `null`) and TensorBoard. With `best_path`, the generator
    scoring best on `monitor` is saved as a standalone Keras model (the
    monitored generator's weights, e.g. the averaged ones for
    `"is_average"`) through a temporary file and an atomic rename.

    Args:
        every: Evaluate every this many iterations.
        real_images: Real images for the FID, in the range the GAN trains on
            (`[-1, 1]`, the generator's tanh range): an array `[N, H, W, C]`,
            or a finite `tf.data.Dataset` of image batches or of
            `(index, image)` batches (as `keras_svre.data.load` makes). All
            of them are used, once, when training starts. Prefer an
            unshuffled dataset (`load(...).snapshot`): iterating a shuffled
            pipeline advances its shuffle seed, so passing the dataset given
            to `fit` would change the order training sees. `None`
            (default): no FID.
        classifier: The evaluation classifier (a Keras model from images in
            `[0, 1]` to class probabilities, with a layer named `"features"`;
            see `keras_svre.metrics`), or a mapping `{name: classifier}` to
            score with several. Defaults to `None`: the project's MNIST
            classifier (`metrics.load_mnist_classifier`) for 28x28x1 images,
            Keras' InceptionV3 with ImageNet weights (`metrics.inception_model`,
            downloaded on first use) for 32x32x3 images.
        num_samples: Images per generator and evaluation. Defaults to 5000.
        generators: Which generators to evaluate, a subset of
            `("current", "average", "ema")`. Defaults to all three.
        splits: Parts for the Inception Score. Defaults to 10.
        seed: Seed of the latent vectors. Defaults to 0.
        batch_size: Images per forward pass of the generator and the
            classifier. Defaults to 500.
        log_path: JSON-lines file to append one record per evaluation to.
        tensorboard_dir: TensorBoard log folder (`tf.summary` scalars, step =
            iteration).
        best_path: `.keras` file to keep the best generator in. Defaults to
            `None`: none kept.
        monitor: The key that decides the best generator: an Inception
            Score (higher is better) or FID (lower is better) key, e.g.
            `"is_average"` or `"fid_ema"`. Defaults to `None`: the averaged
            generator's Inception Score (with the first classifier).
        measure_on_train_begin: Also evaluate before the first iteration.
            Defaults to `False`.

    Raises:
        ValueError: for invalid arguments, or a `monitor` that is not one
            of the IS/FID keys this callback logs.
    """

    _measure_at_end = True

    def __init__(
        self,
        every: int,
        real_images=None,
        classifier: keras.Model | Mapping[str, keras.Model] | None = None,
        num_samples: int = 5000,
        generators: Sequence[str] = GENERATORS,
        splits: int = 10,
        seed: int = 0,
        batch_size: int = 500,
        log_path=None,
        tensorboard_dir=None,
        best_path=None,
        monitor: str | None = None,
        measure_on_train_begin: bool = False,
    ):
        super().__init__(every, log_path, tensorboard_dir, measure_on_train_begin)
        _check_positive_int("num_samples", num_samples)
        _check_positive_int("splits", splits)
        _check_positive_int("batch_size", batch_size)
        if num_samples < max(splits, 2):
            raise ValueError(
                "Argument `num_samples` must be at least `splits` (and 2, for a "
                f"covariance). Received: num_samples={num_samples}, splits={splits}."
            )
        generators = tuple(generators)
        unknown = [g for g in generators if g not in GENERATORS]
        if not generators or unknown or len(set(generators)) != len(generators):
            raise ValueError(
                f"Argument `generators` must be distinct names from {GENERATORS}. "
                f"Received: generators={generators!r}."
            )
        if isinstance(classifier, Mapping):
            if not classifier:
                raise ValueError("Argument `classifier` is an empty mapping.")
            self._named_classifiers = dict(classifier)
            suffixes = {name: f"_{name}" for name in classifier}
        else:
            self._named_classifiers = {"": classifier}
            suffixes = {"": ""}
        self.real_images = real_images
        self.num_samples = int(num_samples)
        self.generators = generators
        self.splits = int(splits)
        self.seed = seed
        self.batch_size = int(batch_size)
        self.best_path = None if best_path is None else pathlib.Path(best_path)
        if self.best_path is not None and self.best_path.suffix != ".keras":
            raise ValueError(
                "Argument `best_path` must end in `.keras`. Received: "
                f"best_path={str(best_path)!r}."
            )

        # key -> (measure, generator, classifier name), for all logged keys.
        self._keys = {
            f"{short}_{which}{suffixes[name]}": (measure, which, name)
            for name in self._named_classifiers
            for which in generators
            for measure, short in _QUALITY_KEYS.items()
            if not (measure == "fid" and real_images is None)
        }
        if monitor is None:
            which = "average" if "average" in generators else generators[0]
            monitor = f"is_{which}{next(iter(suffixes.values()))}"
        monitorable = [
            k for k, (m, _, _) in self._keys.items() if m in ("inception_score", "fid")
        ]
        if monitor not in monitorable:
            raise ValueError(
                "Argument `monitor` must be an Inception Score or FID key that this "
                f"callback logs: one of {monitorable}. Received: monitor={monitor!r}."
            )
        self.monitor = monitor
        self._higher_is_better = self._keys[monitor][0] == "inception_score"
        self.best = None
        self.best_iteration = None
        self._classifiers = {}
        self._score_functions = {}
        self._real_statistics = {}
        self._best_generator = None

    @property
    def keys(self) -> list[str]:
        """The keys this callback logs."""
        return list(self._keys)

    def setup(self):
        image_shape = tuple(self.model.generator.output_shape[1:])
        for name, classifier in self._named_classifiers.items():
            if classifier is None:
                classifier = _default_classifier(image_shape)
            self._classifiers[name] = classifier
            self._score_functions[name] = _features_and_probabilities_function(
                classifier
            )
        if self.real_images is not None:
            real = _as_unit_images(self.real_images)
            for name in self._classifiers:
                features, _ = self._score(name, real)
                self._real_statistics[name] = metrics.feature_statistics(features)

    def _score(self, name, images):
        function = self._score_functions[name]
        features, probabilities = [], []
        for start in range(0, images.shape[0], self.batch_size):
            f, p = function(images[start : start + self.batch_size])
            features.append(f.numpy())
            probabilities.append(p.numpy())
        return np.concatenate(features), np.concatenate(probabilities)

    def evaluate(self) -> dict[str, float]:
        """Evaluates the generators now; returns the values by key."""
        if not self._is_set_up:
            self.setup()
            self._is_set_up = True
        return self.measure()

    def measure(self):
        values = {}
        for which in self.generators:
            generated = self.model.generate(
                self.num_samples,
                which=which,
                batch_size=self.batch_size,
                seed=self.seed,
            )
            if not np.all(np.isfinite(generated)):
                warnings.warn(
                    f"The {which} generator produced non-finite images at iteration "
                    f"{_training_iterations(self.model)}; its scores are logged as NaN.",
                    stacklevel=2,
                )
                scores = {name: {} for name in self._classifiers}
            else:
                images = to_unit_range(generated)
                scores = {
                    name: self._scores(name, images) for name in self._classifiers
                }
            for key, (measure, generator, name) in self._keys.items():
                if generator == which:
                    values[key] = scores[name].get(measure, math.nan)
        self._keep_if_best(values)
        return values

    def _scores(self, name, images):
        features, probabilities = self._score(name, images)
        score, score_std = metrics.inception_score(probabilities, splits=self.splits)
        result = {"inception_score": score, "inception_score_std": score_std}
        result.update(metrics.label_histogram_metrics(probabilities))
        if name in self._real_statistics:
            mean, covariance = metrics.feature_statistics(features)
            result["fid"] = metrics.frechet_distance_from_statistics(
                mean, covariance, *self._real_statistics[name]
            )
        return result

    def _keep_if_best(self, values):
        value = values[self.monitor]
        if not math.isfinite(value):
            return
        improved = self.best is None or (
            value > self.best if self._higher_is_better else value < self.best
        )
        if not improved:
            return
        self.best = value
        self.best_iteration = _training_iterations(self.model)
        if self.best_path is not None:
            self._save_generator(self._keys[self.monitor][1])

    def _save_generator(self, which):
        gan = self.model
        if self._best_generator is None:
            self._best_generator = keras.models.clone_model(gan.generator)
        clone = self._best_generator
        for variable, value in zip(
            clone.trainable_variables, gan.generator_weights(which)
        ):
            variable.assign(value)
        for variable, value in zip(
            clone.non_trainable_variables, gan.generator_statistics(which)
        ):
            variable.assign(value)
        path = self.best_path
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.stem}.tmp{path.suffix}")
        clone.save(temporary)
        # A crash while saving leaves the previous best intact.
        os.replace(temporary, path)


def _default_classifier(image_shape):
    if image_shape == (28, 28, 1):
        return metrics.load_mnist_classifier()
    if image_shape == (32, 32, 3):
        return metrics.inception_model(weights="imagenet", input_shape=image_shape)
    raise ValueError(
        f"No default evaluation classifier for images of shape {image_shape}: "
        "the defaults cover 28x28x1 (the project's MNIST classifier) and 32x32x3 "
        "(InceptionV3). Pass `classifier=` (a model with a 'features' layer, see "
        "`keras_svre.metrics`)."
    )


def _features_and_probabilities_function(classifier):
    """A compiled function `images -> (features, probabilities)`."""
    try:
        features_layer = classifier.get_layer(metrics.FEATURES_LAYER)
    except ValueError:
        raise ValueError(
            f"The classifier `{classifier.name}` has no layer named "
            f"'{metrics.FEATURES_LAYER}'. Name its penultimate layer "
            f"'{metrics.FEATURES_LAYER}' so that its output can be used as features."
        ) from None
    both = keras.Model(classifier.input, [features_layer.output, classifier.outputs[0]])

    @tf.function(reduce_retracing=True)
    def features_and_probabilities(images):
        return both(images, training=False)

    return features_and_probabilities


def _as_unit_images(real_images) -> np.ndarray:
    """Real images (array or dataset, in `[-1, 1]`) as one array in `[0, 1]`."""
    if isinstance(real_images, tf.data.Dataset):
        if int(real_images.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
            raise ValueError(
                "`real_images` is an infinite dataset; pass a finite one (e.g. "
                "`data.snapshot` from `keras_svre.data.load`) or `.take(n)` of it."
            )
        batches = []
        for element in real_images.as_numpy_iterator():
            if isinstance(element, dict):
                element = element["image"]
            elif isinstance(element, (tuple, list)):
                element = element[-1]
            batches.append(element)
        real_images = np.concatenate(batches)
    return to_unit_range(np.asarray(real_images, dtype=np.float32))


class GradientVariance(_PeriodicMeasurement):
    """Measures the noise of the method's gradient estimate every K iterations.

    At the current point, which stays fixed while it is measured (nothing is
    updated), `model.gradient_estimate` (see `keras_svre.Game`) is evaluated
    on `num_batches` minibatches drawn from `dataset`: `F_i(w)` for SGDA and
    extragradient methods, the variance-reduced `F_i(w) - F_i(w_S) + mu_S`
    for SVRE. For each player, with `d_m` its estimate on minibatch `m` (all
    its variables as one vector), it logs

    - `grad_second_moment_<player>`: `(1/M) sum_m ||d_m||^2`, the average
      second moment the SVRE paper plots (SE-A ~20-30, SVRE ~0 on MNIST);
    - `grad_variance_<player>`: `(1/M) sum_m ||d_m - dbar||^2`, with `dbar`
      the mean over the M minibatches: the estimate's variance across
      minibatches. It is exactly 0 for SVRE at its snapshot point.

    The M minibatches are stacked and measured in one `tf.function` (one
    trace), accumulating in float64 with Welford's update so that a zero
    variance comes out as exactly zero.

    Args:
        dataset: A `tf.data.Dataset` of minibatches as the game trains on
            (one minibatch per element, all of the same size); it is
            repeated as needed. Give it a pipeline of its own, not the
            dataset object passed to `fit`: every iterator made on a
            shuffled `tf.data` pipeline advances that pipeline's shuffle
            seed, so drawing from the training dataset object would change
            the order in which training sees the data (and so the run). For
            example `keras_svre.data.load(..., seed=other_seed).train`.
        every: Measure every this many iterations.
        num_batches: Minibatches per measurement (M). Defaults to 10.
        log_path: JSON-lines file to append one record per measurement to.
        tensorboard_dir: TensorBoard log folder.
        measure_on_train_begin: Also measure before the first iteration.
            Defaults to `False`.

    Raises:
        ValueError: for invalid arguments.
        TypeError: if `dataset` is not a `tf.data.Dataset`.
    """

    def __init__(
        self,
        dataset: tf.data.Dataset,
        every: int,
        num_batches: int = 10,
        log_path=None,
        tensorboard_dir=None,
        measure_on_train_begin: bool = False,
    ):
        super().__init__(every, log_path, tensorboard_dir, measure_on_train_begin)
        if not isinstance(dataset, tf.data.Dataset):
            raise TypeError(
                "Argument `dataset` must be a `tf.data.Dataset` of minibatches. "
                f"Received: {type(dataset).__name__}."
            )
        _check_positive_int("num_batches", num_batches)
        self.dataset = dataset
        self.num_batches = int(num_batches)
        self._iterator = None
        self._function = None

    def setup(self):
        if not hasattr(self.model, "gradient_estimate"):
            raise ValueError(
                "`GradientVariance` measures a `keras_svre.Game` (it needs "
                f"`gradient_estimate`); received a {type(self.model).__name__}."
            )

    def next_batches(self):
        """The next `num_batches` minibatches, stacked as `[M, B, ...]`."""
        if self._iterator is None:
            self._iterator = iter(self.dataset.repeat())
        batches = [next(self._iterator) for _ in range(self.num_batches)]
        return tf.nest.map_structure(lambda *parts: tf.stack(parts), *batches)

    def measure(self):
        return self.measure_batches(self.next_batches())

    def measure_batches(self, batches) -> dict[str, float]:
        """Second moment and variance of the estimate on stacked minibatches.

        Args:
            batches: Minibatches stacked on a leading axis `[M, B, ...]`, as
                `next_batches` returns them.

        Returns:
            The values by key (`grad_second_moment_<player>`,
            `grad_variance_<player>`).
        """
        if self._function is None:
            self._function = self._make_function()
        moments = self._function(batches)
        values = {}
        for player, (second_moment, variance) in moments.items():
            values[f"grad_second_moment_{player}"] = float(second_moment)
            values[f"grad_variance_{player}"] = float(variance)
        return values

    def _make_function(self):
        model = self.model
        players = {name: list(variables) for name, variables in model.players().items()}

        @tf.function
        def moments(stacked):
            count = tf.shape(tf.nest.flatten(stacked)[0])[0]
            # Per player: the running mean of the estimate, the sum of its
            # squared norms, and Welford's sum of squared deviations, in
            # float64. Starting from zeros keeps one copy of the estimate's
            # graph (in the loop body): tracing it is the slow part.
            means = tuple(
                tuple(tf.zeros(v.shape, tf.float64) for v in variables)
                for variables in players.values()
            )
            squares = tuple(tf.constant(0.0, tf.float64) for _ in players)
            deviations = tuple(tf.constant(0.0, tf.float64) for _ in players)
            for m in tf.range(count):
                estimate = model.gradient_estimate(
                    tf.nest.map_structure(lambda x, m=m: x[m], stacked)
                )
                k = tf.cast(m + 1, tf.float64)
                new_means, new_squares, new_deviations = [], [], []
                for p, mean, square, deviation in zip(
                    players, means, squares, deviations
                ):
                    d = [tf.cast(g, tf.float64) for g in estimate[p]]
                    delta = [x - mu for x, mu in zip(d, mean)]
                    updated = tuple(mu + dx / k for mu, dx in zip(mean, delta))
                    new_means.append(updated)
                    new_squares.append(square + _squared_norm(d))
                    new_deviations.append(
                        deviation
                        + tf.add_n(
                            [
                                tf.reduce_sum(dx * (x - mu))
                                for dx, x, mu in zip(delta, d, updated)
                            ]
                        )
                    )
                means = tuple(new_means)
                squares = tuple(new_squares)
                deviations = tuple(new_deviations)
            total = tf.cast(count, tf.float64)
            return {
                p: (square / total, deviation / total)
                for p, square, deviation in zip(players, squares, deviations)
            }

        return moments


def _squared_norm(tensors):
    return tf.add_n([tf.reduce_sum(tf.square(tf.cast(t, tf.float64))) for t in tensors])
