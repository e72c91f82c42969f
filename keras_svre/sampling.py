"""Sampling a GAN's generators: current, EMA and uniform average.

`GeneratorSampling` is the part of `keras_svre.GAN` that turns one of the
generator's sets of weights into images or a standalone model, each with
BatchNorm statistics recomputed for its own weights (`keras_svre.batch_norm`).
"""

from __future__ import annotations

import hashlib

import keras
import numpy as np
from keras import ops

from keras_svre import batch_norm
from keras_svre.game import backend as game_backend

GENERATORS = ("ema", "average", "current")
# The fresh latents a generator's BatchNorm statistics are recomputed from.
STATISTICS_SAMPLES = 5000
STATISTICS_BATCH_SIZE = 500


class GeneratorSampling:
    """Samples, statistics and standalone copies of a GAN's generators.

    A mixin of `keras_svre.GAN`: it reads the GAN's `generator`,
    `generator_average`, `generator_ema`, `average_count`, `ema_decay`,
    `latent_dim`, `seed` and `default_generator`.
    """

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


# The stream of the latents BatchNorm statistics are recomputed from.
_STATISTICS_STREAM = 0x57A7


def _digest(values) -> bytes:
    """A fingerprint of a list of tensors' values (to see that weights changed)."""
    digest = hashlib.blake2b(digest_size=16)
    for value in values:
        digest.update(np.ascontiguousarray(ops.convert_to_numpy(value)).tobytes())
    return digest.digest()
