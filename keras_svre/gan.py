"""A GAN as a two-player `Game`: generator and discriminator."""

from __future__ import annotations

import hashlib

import keras
import numpy as np
from keras import ops

from keras_svre import batch_norm
from keras_svre import latents as latent_draws
from keras_svre import losses as gan_losses
from keras_svre.game import Game
from keras_svre.game import backend as game_backend
from keras_svre.game import data as game_data

GENERATORS = ("ema", "average", "current")
# The fresh latents a generator's BatchNorm statistics are recomputed from.
STATISTICS_SAMPLES = 5000
STATISTICS_BATCH_SIZE = 500
# When the latent vectors of the finite sum are drawn anew ("auto": at each
# snapshot for variance-reduced methods, each epoch for the others).
LATENT_SCHEDULES = ("auto", "fixed", "per-snapshot", "per-epoch", "per-step")


@keras.saving.register_keras_serializable(package="keras_svre")
class GAN(Game):
    """A generative adversarial network trained as a two-player game.

    The players are `"generator"` and `"discriminator"`; each minimises its
    own loss (`loss` picks the pair). Any method works through
    `compile`: one optimizer for both players, or `generator_optimizer=` and
    `discriminator_optimizer=` (for instance different step sizes):

        gan = keras_svre.GAN(generator, discriminator, latent_dim=128,
                             num_examples=data.num_examples)
        gan.compile(optimizer=keras_svre.SVRE(1e-2))
        gan.fit(data.train, snapshot_data=data.snapshot, epochs=5)

    **The finite sum.** SVRE needs the same function `F_i` at the current
    point and at the snapshot. Training example `k` is paired with a latent
    vector `z_k` drawn statelessly from `(seed, latent_version, k)`
    (`keras_svre.latents`: no per-example variable is kept). Training data is
    therefore a dataset of `(index, image)` minibatches, as
    `keras_svre.data.load` makes (or `keras_svre.data.index_examples` for
    your own images). The snapshot pass covers the whole dataset
    (`snapshot_data`, any batch size). `latents` says when the latents are
    drawn anew (`latent_version` advances): `"per-snapshot"` (before each
    snapshot's full pass, so the finite sum is exact between snapshots; the
    default for variance-reduced methods), `"per-epoch"` (at the start of
    each epoch; the default for the others), `"per-step"` (fresh latents at
    every iteration: not a finite sum, for comparison) or `"fixed"` (one set
    for the whole run, like a fixed bank).

    **State (BatchNorm, spectral norm).** One forward pass per minibatch gives
    both players' losses: the discriminator sees the real batch and the
    generated batch in two calls (so BatchNorm statistics are never mixed).
    Only the evaluation at the current point updates non-trainable state
    (moving statistics, power-iteration vectors); the snapshot, extrapolated
    and snapshot-pass evaluations run in training mode but discard their
    state updates (see `keras_svre.Game`).

    **Gradient penalties.** `gradient_penalty="wgan-gp"` adds
    `gradient_penalty_weight * mean_k (||grad_x D(x_hat_k)|| - 1)^2` to the
    discriminator's loss, at points `x_hat_k = u_k x_k + (1 - u_k) G(z_k)`
    between real and generated images (Gulrajani et al., 2017);
    `gradient_penalty="r1"` adds `gradient_penalty_weight / 2 *
    mean_k ||grad_x D(x_k)||^2` on the real images (Mescheder et al., 2018).
    The penalty is part of the discriminator's loss in every evaluation of
    the game's field, so with any method: SVRE's snapshot, extrapolated and
    snapshot-pass evaluations include it. Like `z_k`, the interpolation
    coefficient `u_k` of example `k` is drawn from `(seed, latent_version,
    k)` like `z_k`, so `F_i` stays one function: the evaluations at the current point and at the snapshot on
    the same minibatch use the same `x_hat`. The penalty's extra
    discriminator pass (on `x_hat` or the real images) leaves BatchNorm's
    and spectral norm's state alone; but with batch normalisation in
    training mode an example's input gradient depends on the whole batch,
    so use a discriminator without it (as Gulrajani et al. advise; in the
    command line, `--no-batch-norm`).

    **Averaged generators.** A uniform average and an exponential moving
    average (`ema_decay`, debiased like Adam's moments) of the generator's
    trainable weights are updated after every iteration and saved with the
    model; `generate(..., which="ema" | "average" | "current")` samples from
    any of them, and `generator_model(which)` returns one as a standalone
    Keras model (to save, export or serve without the GAN).

    **BatchNorm statistics.** Each generator is sampled with BatchNorm
    moving statistics of its own weights: `generator_statistics(which)`
    recomputes them (as stochastic weight averaging does) from a forward pass
    in training mode over fresh latents, averaging the batch statistics, and
    keeps them until the weights change. The moving averages the training
    leaves (momentum 0.9–0.99) lag weights that move fast, and an averaged
    generator paired with the current one's statistics is a network nobody
    trained. Generators without BatchNorm are unchanged.

    Args:
        generator: A built Keras model mapping latents `[B, latent_dim]` to
            images.
        discriminator: A built Keras model mapping images to logits `[B, 1]`
            (no final sigmoid: the losses apply it; one is refused).
        latent_dim: Size of the latent vectors. Defaults to the generator's
            input size.
        num_examples: Number of training examples (the size of the finite
            sum: indices must be below it). Required.
        loss: `"non_saturating"` (default, the paper's MNIST runs), `"hinge"`,
            `"wasserstein"`, a `keras_svre.losses.GANLoss`, or a pair of
            callables `(discriminator_loss, generator_loss)` on logits.
        ema_decay: Decay of the generator's EMA. Defaults to `0.999`.
        seed: Seed of the latent vectors and of the snapshot-restart draws.
        default_generator: The generator `generate()` samples when none is
            named: `"ema"` (default), `"average"` or `"current"`. Saved with
            the model; `keras-svre train` sets it to the one that scored best
            in the run's final evaluation.
        gradient_penalty: `None` (default), `"wgan-gp"` or `"r1"`: a
            regulariser added to the discriminator's loss (see above).
        gradient_penalty_weight: The penalty's weight (WGAN-GP's lambda,
            R1's gamma), a positive number. Defaults to `10.0`.
        latents: When the training examples' latent vectors are drawn anew:
            `"auto"` (default: `"per-snapshot"` for variance-reduced
            methods, `"per-epoch"` otherwise, decided at each `compile`),
            `"per-snapshot"`, `"per-epoch"`, `"per-step"` or `"fixed"`.
        **kwargs: Passed to `keras_svre.Game`.

    Raises:
        ValueError: for networks, sizes or options the GAN cannot use, in
            one sentence each.
    """

    def __init__(
        self,
        generator: keras.Model,
        discriminator: keras.Model,
        latent_dim: int | None = None,
        num_examples: int | None = None,
        loss="non_saturating",
        ema_decay: float = 0.999,
        seed: int | None = None,
        default_generator: str = "ema",
        gradient_penalty: str | None = None,
        gradient_penalty_weight: float = 10.0,
        latents: str = "auto",
        **kwargs,
    ):
        super().__init__(seed=seed, **kwargs)
        self.gradient_penalty = gan_losses.check_gradient_penalty(
            gradient_penalty, gradient_penalty_weight
        )
        self.gradient_penalty_weight = float(gradient_penalty_weight)
        for role, net in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(net, keras.Model) or not net.built or not net.weights:
                raise ValueError(
                    f"The {role} must be a built Keras model (a functional model, "
                    "or a subclassed one called once on a batch)."
                )
        generator_latent = _input_size(generator)
        if latent_dim is not None and (not _is_integer(latent_dim) or latent_dim < 1):
            raise ValueError(
                "Argument `latent_dim` must be a positive integer. "
                f"Received: latent_dim={latent_dim!r}."
            )
        if latent_dim is None:
            latent_dim = generator_latent
        elif generator_latent is not None and int(latent_dim) != generator_latent:
            raise ValueError(
                f"Argument `latent_dim` ({latent_dim}) must match the generator's "
                f"input size ({generator_latent}): leave it out (it defaults to "
                "the generator's) or build the generator for this size. "
                f"Received: latent_dim={latent_dim}."
            )
        if latent_dim is None:
            raise ValueError(
                "The generator's input size is unknown: pass `latent_dim=`."
            )
        if _ends_in_sigmoid(discriminator):
            raise ValueError(
                "The discriminator ends in a sigmoid, but the GAN losses take "
                "logits (they apply the sigmoid themselves, stably): remove the "
                "final sigmoid (e.g. `Dense(1)` without `activation='sigmoid'`)."
            )
        if num_examples is None:
            raise ValueError(
                "`num_examples` (the number of training examples, i.e. the size of "
                "the size of the finite sum) is required, e.g. "
                "`num_examples=data.num_examples` with `keras_svre.data.load`."
            )
        if not _is_integer(num_examples) or num_examples < 1:
            raise ValueError(
                "Argument `num_examples` (the number of training examples) must "
                f"be a positive integer. Received: num_examples={num_examples!r}."
            )
        if (
            isinstance(ema_decay, bool)
            or not isinstance(ema_decay, (int, float, np.number))
            or not 0.0 <= ema_decay < 1.0
        ):
            raise ValueError(
                f"Argument `ema_decay` must be a number in [0, 1). "
                f"Received: ema_decay={ema_decay!r}."
            )
        if latents not in LATENT_SCHEDULES:
            raise ValueError(
                f"Argument `latents` must be one of {LATENT_SCHEDULES}. "
                f"Received: latents={latents!r}."
            )
        self.latents_schedule = latents
        if default_generator not in GENERATORS:
            raise ValueError(
                f"Argument `default_generator` must be one of {GENERATORS}. "
                f"Received: default_generator={default_generator!r}."
            )
        self.default_generator = default_generator
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(latent_dim)
        self.num_examples = int(num_examples)
        self.loss_config = loss if isinstance(loss, str) else None
        self.gan_loss = gan_losses.get(loss)
        self.ema_decay = float(ema_decay)
        # Which set of latent vectors the finite sum uses (see `latents`):
        # saved with the model, so a resumed run draws the same ones. In the
        # place the noise bank of older versions held (see
        # `load_own_variables`).
        self.latent_version = self.add_weight(
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            name="latent_version",
            aggregation="only_first_replica",
        )
        self.average_count = self.add_weight(
            shape=(),
            # int64 on TensorFlow, int32 on JAX (no x64): Keras' "int".
            dtype="int",
            initializer="zeros",
            trainable=False,
            name="average_count",
            aggregation="only_first_replica",
        )

        def copies(prefix, initial):
            return [
                self.add_weight(
                    shape=v.shape,
                    dtype=v.dtype,
                    initializer=keras.initializers.Constant(initial(v)),
                    trainable=False,
                    name=f"{prefix}_{v.path.replace('/', '_')}",
                    aggregation="only_first_replica",
                )
                for v in generator.trainable_variables
            ]

        self.generator_average = copies("average", np.asarray)
        # The EMA starts at zero and is debiased when read (as Adam's moments
        # are), so that short runs are not dominated by the initial weights.
        self.generator_ema = copies("ema", lambda v: np.zeros(v.shape))
        self.built = True

    # The game.
    def players(self):
        return {
            "generator": self.generator.trainable_variables,
            "discriminator": self.discriminator.trainable_variables,
        }

    def split_batch(self, data):
        """`(index, images)` of a minibatch, with a clear error for anything else."""
        if isinstance(data, dict):
            data = (data["index"], data["image"])
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError(
                "A GAN trains on `(index, image)` minibatches: the index pairs each "
                "example with its latent vector (the finite sum). "
                "Use `keras_svre.data.load(...)`, or "
                "`keras_svre.data.index_examples(images)` before shuffling/batching."
            )
        return data

    @property
    def latent_schedule(self) -> str:
        """When the latents are drawn anew, with `"auto"` resolved for the method."""
        if self.latents_schedule != "auto":
            return self.latents_schedule
        return (
            "per-snapshot" if getattr(self, "variance_reduced", False) else "per-epoch"
        )

    def _version(self):
        return ops.convert_to_tensor(self.latent_version)

    def latents(self, index):
        """The latent vectors of training examples `index` (`[batch, latent_dim]`).

        Drawn from `(seed, latent_version, index)`: the same for the same
        example until the version advances (see `latents` in the class doc).
        """
        values = latent_draws.normal(
            self.seed, self._version(), index, self.latent_dim, self._draw_dtype()
        )
        return game_backend.checked_rows(
            values, index, self.num_examples, _INDEX_MESSAGE_MARKER
        )

    def _draw_dtype(self):
        """float64 for a float64 GAN, float32 otherwise (mixed precision too)."""
        return "float64" if self.dtype_policy.variable_dtype == "float64" else "float32"

    def advance_latents(self, version=None):
        """Draws a new set of latents: `latent_version` + 1, or `version` if given."""
        self._sync_state()
        if version is None:
            version = int(ops.convert_to_numpy(self.latent_version)) + 1
        self.latent_version.assign(int(version))

    def _before_snapshot_pass(self):
        # New latents before mu_S is computed: the finite sum is then exact
        # until the next snapshot.
        if self.latent_schedule == "per-snapshot":
            self.advance_latents()

    def fit(self, x=None, y=None, *, callbacks=None, **kwargs):
        """`keras_svre.Game.fit`, drawing new latents each epoch where asked."""
        callbacks = [_LatentEpochs(), *(callbacks or [])]
        return super().fit(x, y, callbacks=callbacks, **kwargs)

    def compute_player_losses(self, data, training=True):
        index, real = self.split_batch(data)
        return self._gan_losses(
            real, self.latents(index), training, self._interpolation(index)
        )

    def _interpolation(self, index):
        """WGAN-GP's coefficients for training examples (`None` without it)."""
        if self.gradient_penalty != "wgan-gp":
            return None
        return latent_draws.uniform(
            self.seed, self._version(), index, self._draw_dtype()
        )

    def compute_gradient_penalty(self, data, training=True):
        """The weighted penalty term of the discriminator's loss on a minibatch.

        What `compute_player_losses` adds to the discriminator's loss on
        `(index, image)` training minibatches, at the current weights. No
        state changes (BatchNorm statistics, spectral-norm vectors).

        Returns:
            A scalar tensor.

        Raises:
            ValueError: if the GAN has no gradient penalty.
        """
        if self.gradient_penalty is None:
            raise ValueError(
                "This GAN has no gradient penalty: build it with "
                "`gradient_penalty='wgan-gp'` or `'r1'`."
            )
        index, real = self.split_batch(data)
        # A scope without a state mapping: reads the variables, discards writes.
        with keras.StatelessScope():
            fake = self.generator(self.latents(index), training=training)
            return self._penalty(real, fake, self._interpolation(index), training)

    def compute_evaluation_losses(self, data):
        """The players' losses on held-out `(index, image)` minibatches.

        Held-out examples are not in the training finite sum (their indices
        are another split's), so they get latents of a stream of their own,
        drawn from the game's seed and each example's index: the same
        minibatch is evaluated the same way every time.
        """
        index, real = self.split_batch(data)
        seed = self.seed ^ _HELD_OUT_SALT
        dtype = self._draw_dtype()
        latents = latent_draws.normal(seed, 0, index, self.latent_dim, dtype)
        interpolation = None
        if self.gradient_penalty == "wgan-gp":
            interpolation = latent_draws.uniform(seed, 0, index, dtype)
        return self._gan_losses(real, latents, False, interpolation)

    def _gan_losses(self, real, latents, training, interpolation=None):
        fake = self.generator(latents, training=training)
        real_logits = _to_float32(self.discriminator(real, training=training))
        fake_logits = _to_float32(self.discriminator(fake, training=training))
        discriminator_loss = self.gan_loss.discriminator_loss(real_logits, fake_logits)
        if self.gradient_penalty is not None:
            penalty = self._penalty(real, fake, interpolation, training)
            discriminator_loss = discriminator_loss + ops.cast(
                penalty, discriminator_loss.dtype
            )
        return {
            "generator": self.gan_loss.generator_loss(fake_logits),
            "discriminator": discriminator_loss,
        }

    def _penalty(self, real, fake, interpolation, training):
        """`gradient_penalty_weight` times the penalty, on one minibatch."""
        if self.gradient_penalty == "wgan-gp":
            penalty = gan_losses.wgan_gp_penalty(
                self._critic(training), real, fake, interpolation
            )
        else:
            penalty = gan_losses.r1_penalty(self._critic(training), real)
        return self.gradient_penalty_weight * penalty

    def _critic(self, training):
        """The discriminator as a function of images, leaving its state alone.

        A stateless call with the weights the discriminator reads now (inside
        the game's evaluation, the evaluated point's), so that the penalty's
        extra pass does not move BatchNorm statistics or spectral-norm
        vectors a second time.
        """
        net = self.discriminator

        def critic(images):
            trainable = [v.value for v in net.trainable_variables]
            non_trainable = [v.value for v in net.non_trainable_variables]
            logits, _ = net.stateless_call(
                trainable, non_trainable, images, training=training
            )
            return logits

        return critic

    def call(self, latents, training=False):
        return self.generator(latents, training=training)

    # Training.
    def reset_averages(self):
        """Restarts the uniform average and the EMA at the current generator.

        For a warm start (SVRE-GAN-WS): the averaged generators then average
        the iterates of the method that follows only.
        """
        for v, average, ema in zip(
            self.generator.trainable_variables,
            self.generator_average,
            self.generator_ema,
        ):
            average.assign(v)
            ema.assign(ops.zeros(ema.shape, ema.dtype))
        self.average_count.assign(0)

    def _after_update(self):
        if self.latent_schedule == "per-step":
            self.latent_version.assign_add(1)
        # Only applied iterations enter the averages (not skipped ones).
        count = ops.cast(self.average_count + 1, "float32")
        decay = self.ema_decay
        for v, average, ema in zip(
            self.generator.trainable_variables,
            self.generator_average,
            self.generator_ema,
        ):
            value = ops.convert_to_tensor(v)
            average.assign_add((value - average) / ops.cast(count, v.dtype))
            ema.assign(decay * ema + (1.0 - decay) * value)
        self.average_count.assign_add(1)

    def check_data(self, dataset, what):
        """Refuses data that is not `(index, image)` minibatches for these networks."""
        super().check_data(dataset, what)
        spec = game_data.element_spec(dataset)
        if isinstance(spec, dict):
            spec = (spec.get("index"), spec.get("image"))
        if not isinstance(spec, (tuple, list)) or len(spec) != 2:
            self.split_batch(spec)
        index_spec = spec[0]
        if (
            not isinstance(index_spec, keras.KerasTensor)
            or not keras.backend.standardize_dtype(index_spec.dtype).startswith(
                ("int", "uint")
            )
            or len(index_spec.shape) != 1
        ):
            raise ValueError(
                f"The {what} must yield `(index, image)` minibatches (index: "
                "integers of shape [batch]), but its first element has shape "
                f"{_shape_text(index_spec)} and dtype "
                f"{getattr(index_spec, 'dtype', '?')}: if it "
                "yields `(image, label)`, keep the images "
                "(`dataset.map(lambda image, label: image)`) and index them with "
                "`keras_svre.data.index_examples` before shuffling and batching."
            )
        self._check_image_shape(spec, what)
        # Held-out minibatches (evaluation, validation) are another split's
        # examples: they get fresh latents, not the bank's.
        if what in ("training dataset", "snapshot dataset"):
            self._check_indices(dataset, what)

    def _check_indices(self, dataset, what):
        """Refuses NumPy data with an index outside the finite sum (read on the host)."""
        arrays = getattr(dataset, "arrays", None)
        if arrays is None or game_data.is_tf_dataset(dataset):
            return
        if isinstance(arrays, dict):
            index = arrays.get("index")
        elif isinstance(arrays, (tuple, list)) and len(arrays) == 2:
            index = arrays[0]
        else:
            return
        if index is not None and len(index) and int(np.max(index)) >= self.num_examples:
            raise ValueError(
                f"The {what}: " + self._data_error_messages()[_INDEX_MESSAGE_MARKER]
            )

    def _data_error_messages(self):
        return {
            _INDEX_MESSAGE_MARKER: (
                "An example index in the training data is not below the GAN's "
                f"num_examples={self.num_examples} (each training example "
                "has one latent vector): build the GAN with "
                "`num_examples=` the number of training examples, and index "
                "them from 0 (`keras_svre.data.index_examples`)."
            )
        }

    def _check_image_shape(self, spec, what):
        image_shape = tuple(spec[1].shape[1:])
        expected = tuple(self.discriminator.input_shape[1:])
        generated = tuple(self.generator.output_shape[1:])
        if image_shape != expected or generated != expected:
            raise ValueError(
                f"The images of the {what} have shape {image_shape}, the discriminator "
                f"takes {expected} and the generator makes {generated}: they must "
                "match. Resize the data (e.g. `keras_svre.data.load(..., "
                "image_size=...)`) or build the networks for this image shape."
            )

    # Sampling.
    def generator_weights(self, which: str | None = None) -> list:
        """The generator's trainable weights: `"current"`, `"average"` or `"ema"`.

        `None` (default): `default_generator`.
        """
        which = self.default_generator if which is None else which
        self._sync_state()
        if which == "current":
            return [
                ops.convert_to_tensor(v) for v in self.generator.trainable_variables
            ]
        if which == "average":
            return [ops.convert_to_tensor(v) for v in self.generator_average]
        if which == "ema":
            count = int(ops.convert_to_numpy(self.average_count))
            if count == 0:
                return self.generator_weights("current")
            debias = 1.0 - self.ema_decay**count
            return [ops.convert_to_tensor(v) / debias for v in self.generator_ema]
        raise ValueError(
            f"`which` must be 'current', 'average' or 'ema'. Received: {which!r}."
        )

    def export(self, filepath, format="tf_saved_model", verbose=None, **kwargs):
        """Exports the default generator (latents -> images) for inference.

        A GAN is a game, not one function: what is served is its generator
        (`default_generator`), as `keras-svre export` does. This is
        `generator_model().export(...)` (Keras' `Model.export`; for another
        generator, call that on `generator_model(which)`).

        Args:
            filepath: Where to write the artifact.
            format: Keras' export format. Defaults to `"tf_saved_model"`
                (which needs TensorFlow).
            verbose: Passed to Keras' `Model.export`.
            **kwargs: Passed to Keras' `Model.export`.
        """
        return self.generator_model().export(
            filepath, format=format, verbose=verbose, **kwargs
        )

    def generator_model(self, which: str | None = None) -> keras.Model:
        """A standalone copy of the generator carrying one set of its weights.

        The copy is a clone of the generator network with variables of its
        own (nothing is shared with the GAN, so training on goes on without
        changing it), holding the trainable weights `generator_weights(which)`
        and the non-trainable state `generator_statistics(which)` (BatchNorm
        statistics recomputed for those weights; spectral-norm vectors as
        they are). In inference mode it computes
        what `generate(latents, which=which)` does, and it can be saved,
        exported or served without the GAN.

        Args:
            which: `"ema"`, `"average"` or `"current"`. Defaults to `None`:
                `default_generator`.

        Returns:
            A built `keras.Model` mapping latents `[B, latent_dim]` to images.

        Raises:
            ValueError: if `which` is not one of the generators.
        """
        which = self.default_generator if which is None else which
        if which not in GENERATORS:
            raise ValueError(
                f"Argument `which` must be one of {GENERATORS} (or None for "
                f"default_generator). Received: which={which!r}."
            )
        model = keras.models.clone_model(self.generator)
        if not model.built:
            model(np.zeros((1, self.latent_dim), "float32"), training=False)
        pairs = list(zip(model.trainable_variables, self.generator_weights(which)))
        pairs += list(
            zip(model.non_trainable_variables, self.generator_statistics(which))
        )
        counts = (len(model.trainable_variables), len(model.non_trainable_variables))
        expected = (
            len(self.generator.trainable_variables),
            len(self.generator.non_trainable_variables),
        )
        if counts != expected or any(v.shape != w.shape for v, w in pairs):
            raise ValueError(
                "The clone of the generator (`keras.models.clone_model`) has "
                "other variables than the generator itself: give its class a "
                "`get_config` that rebuilds the same network."
            )
        for variable, value in pairs:
            variable.assign(ops.convert_to_tensor(value))
        return model

    def generate(
        self,
        latents_or_count,
        which: str | None = None,
        batch_size: int = 500,
        seed=None,
    ) -> np.ndarray:
        """Generated images (in the generator's output range) as a NumPy array.

        Args:
            latents_or_count: Latent vectors `[N, latent_dim]`, or a number of
                samples to draw from N(0, I).
            which: `"ema"` (the debiased exponential moving average of the
                iterates), `"average"` (their uniform average) or
                `"current"`. Defaults to `None`: `default_generator` (`"ema"`
                unless set).
            batch_size: Generation batch size.
            seed: Seed for drawing the latents when a count is given.
        """
        if np.isscalar(latents_or_count):
            rng = np.random.default_rng(seed)
            latents = rng.standard_normal((int(latents_or_count), self.latent_dim))
        else:
            latents = np.asarray(latents_or_count)
        latents = latents.astype("float32")
        weights = self.generator_weights(which)
        state = self.generator_statistics(which)
        fn = self._generate_fn()
        out = [
            ops.convert_to_numpy(fn(weights, state, latents[i : i + batch_size]))
            for i in range(0, len(latents), batch_size)
        ]
        return np.concatenate(out, axis=0)

    def generator_statistics(self, which: str | None = None) -> list:
        """The generator's non-trainable state for one of its sets of weights.

        BatchNorm moving statistics recomputed for the weights
        `generator_weights(which)` (see `update_generator_statistics`), the
        rest (spectral-norm vectors) as the generator holds it. Kept until
        those weights change, so repeated sampling recomputes nothing.

        Args:
            which: `"ema"`, `"average"` or `"current"`; `None`:
                `default_generator`.

        Returns:
            A list of tensors aligned with
            `generator.non_trainable_variables`.
        """
        which = self.default_generator if which is None else which
        weights = self.generator_weights(which)
        cached = self._statistics_cache().get(which)
        if cached is not None and cached[0] == _digest(weights):
            return list(cached[1])
        return self.update_generator_statistics(which)

    def update_generator_statistics(
        self,
        which: str | None = None,
        num_samples: int = STATISTICS_SAMPLES,
        batch_size: int = STATISTICS_BATCH_SIZE,
        latents=None,
    ) -> list:
        """Recomputes a generator's BatchNorm statistics for its own weights.

        A forward pass in training mode over `num_samples` fresh latents
        (drawn from the GAN's seed, so the result is reproducible), in
        batches of `batch_size`, averaging the batch statistics, as
        stochastic weight averaging does. No variable changes: the result is
        what `generate`, `generator_model` and the evaluations use for
        `which` until its weights change. A generator without BatchNorm
        keeps its state as it is.

        Args:
            which: `"ema"`, `"average"` or `"current"`; `None`:
                `default_generator`.
            num_samples: How many latents. Defaults to 5,000.
            batch_size: The batch size of the training-mode passes. Defaults
                to 500.
            latents: Optional latent vectors `[M, latent_dim]` to use instead
                of `num_samples` fresh ones.

        Returns:
            A list of tensors aligned with
            `generator.non_trainable_variables`.
        """
        which = self.default_generator if which is None else which
        for name, value in (("num_samples", num_samples), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"Argument `{name}` must be a positive integer. "
                    f"Received: {name}={value!r}."
                )
        weights = self.generator_weights(which)
        current = [
            ops.convert_to_tensor(v) for v in self.generator.non_trainable_variables
        ]
        if latents is None:
            rng = np.random.default_rng([self.seed % (2**32), _STATISTICS_STREAM])
            latents = rng.standard_normal((num_samples, self.latent_dim))
        latents = np.asarray(latents, "float32")
        batches = (
            latents[i : i + batch_size] for i in range(0, len(latents), batch_size)
        )
        state = self._statistics_pass()(weights, current, batches)
        self._statistics_cache()[which] = (_digest(weights), list(state))
        return state

    def _statistics_cache(self):
        cache = self.__dict__.get("_generator_statistics")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_generator_statistics", cache)
        return cache

    def _statistics_pass(self):
        statistics_pass = self.__dict__.get("_statistics_pass_function")
        if statistics_pass is None:
            statistics_pass = batch_norm.StatisticsPass(
                self.generator, game_backend.compile_function
            )
            object.__setattr__(self, "_statistics_pass_function", statistics_pass)
        return statistics_pass

    def _generate_fn(self):
        fn = self.__dict__.get("_generate_function")
        if fn is None:

            def generate(weights, state, latents):
                images, _ = self.generator.stateless_call(
                    weights, state, latents, training=False
                )
                return images

            fn = game_backend.compile_function(generate)
            object.__setattr__(self, "_generate_function", fn)
        return fn

    # Serialisation.
    def get_config(self):
        if self.loss_config is None:
            raise NotImplementedError(
                "A GAN with a custom loss cannot be serialised by name; register "
                "your loss, or save weights only."
            )
        return {
            "generator": keras.saving.serialize_keras_object(self.generator),
            "discriminator": keras.saving.serialize_keras_object(self.discriminator),
            "latent_dim": self.latent_dim,
            "num_examples": self.num_examples,
            "loss": self.loss_config,
            "ema_decay": self.ema_decay,
            "seed": self.seed,
            "default_generator": self.default_generator,
            "gradient_penalty": self.gradient_penalty,
            "gradient_penalty_weight": self.gradient_penalty_weight,
            "latents": self.latents_schedule,
            "name": self.name,
            "dtype": self.dtype_policy.name,
        }

    def load_own_variables(self, store):
        """Loads the GAN's own variables, also from files with a noise bank.

        Files saved before the latents were drawn statelessly hold the bank
        (`[num_examples, latent_dim]`) where `latent_version` is now, and
        with WGAN-GP an interpolation bank (`[num_examples]`) after it: the
        banks are dropped and the version starts at 0 (the latents then
        differ from the bank's, as after any new draw). A file with another
        layout fails as Keras says.
        """
        super().load_own_variables(_without_banks(store, self))

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["generator"] = keras.saving.deserialize_keras_object(config["generator"])
        config["discriminator"] = keras.saving.deserialize_keras_object(
            config["discriminator"]
        )
        return cls(**config)


class _LatentEpochs(keras.callbacks.Callback):
    """Sets the latents' version to the epoch, for the `"per-epoch"` schedule.

    The version is the epoch's number (not a count of epochs begun), so a run
    resumed mid-epoch draws what the uninterrupted one did.
    """

    def on_epoch_begin(self, epoch, logs=None):
        if self.model.latent_schedule == "per-epoch":
            self.model.advance_latents(version=epoch)


class _StoreWithoutBanks:
    """A variables store (`load_own_variables`) with an old file's banks dropped."""

    def __init__(self, store, keys):
        self._store = store
        self._keys = keys

    def keys(self):
        return [str(i) for i in range(len(self._keys))]

    def __len__(self):
        return len(self._keys)

    def __getitem__(self, key):
        source = self._keys[int(key)]
        return np.zeros((), "int32") if source is None else self._store[source]


def _without_banks(store, gan):
    """`store`, or a view of it without the noise and interpolation banks."""
    own = gan._trainable_variables + gan._non_trainable_variables
    at = next(i for i, v in enumerate(own) if v is gan.latent_version)
    bank_shape = (gan.num_examples, gan.latent_dim)
    if len(store.keys()) <= at or tuple(store[str(at)].shape) != bank_shape:
        return store
    # [..., restart_draws, noise_bank, (interpolation_bank,) ...]: the version
    # (None: zero) takes the noise bank's place.
    keys = [str(i) for i in range(len(store.keys()))]
    rest = keys[at + 1 :]
    if rest and tuple(store[rest[0]].shape) == (gan.num_examples,):
        rest = rest[1:]
    return _StoreWithoutBanks(store, [*keys[:at], None, *rest])


_INDEX_MESSAGE_MARKER = "keras_svre: example index out of the finite sum"
# The held-out examples' latents: a key of their own (see
# `compute_evaluation_losses`).
_HELD_OUT_SALT = 0x5EED0001


# The stream of the latents BatchNorm statistics are recomputed from.
_STATISTICS_STREAM = 0x57A7


def _digest(values) -> bytes:
    """A fingerprint of a list of tensors' values (to see that weights changed)."""
    digest = hashlib.blake2b(digest_size=16)
    for value in values:
        digest.update(np.ascontiguousarray(ops.convert_to_numpy(value)).tobytes())
    return digest.digest()


def _to_float32(logits):
    # The losses in float32 under mixed precision: float16 logits would
    # overflow once the loss is scaled.
    if keras.backend.standardize_dtype(logits.dtype) in ("float16", "bfloat16"):
        return ops.cast(logits, "float32")
    return logits


def _shape_text(spec):
    shape = getattr(spec, "shape", None)
    if shape is None:
        return "?"
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _is_integer(value) -> bool:
    """An integer (a NumPy one too), not a bool, a float or a string."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def _input_size(model):
    try:
        size = model.input_shape[-1]
    except (AttributeError, ValueError):
        return None
    return None if size is None else int(size)


def _ends_in_sigmoid(model):
    layers = getattr(model, "layers", None)
    if not layers:
        return False
    last = layers[-1]
    activation = getattr(last, "activation", None)
    sigmoid = keras.activations.sigmoid
    if activation is sigmoid:
        return True
    return getattr(activation, "__name__", None) == "sigmoid"
