"""Each generator's BatchNorm statistics, recomputed for its own weights."""

import keras
import numpy as np
import pytest

import keras_svre
from tests.backend_helpers import minibatches, numpy

pytestmark = pytest.mark.jax

N, LATENT, HIDDEN, PIXELS = 16, 3, 6, 4


def batch_norm_gan(batch_norm=True):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((LATENT,)), keras.layers.Dense(HIDDEN)]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(momentum=0.9))
    layers += [keras.layers.ReLU(), keras.layers.Dense(PIXELS)]
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(momentum=0.5, epsilon=1e-3))
    generator = keras.Sequential(layers, name="g")
    discriminator = keras.Sequential(
        [keras.Input((PIXELS,)), keras.layers.Dense(1)], name="d"
    )
    return keras_svre.GAN(
        generator, discriminator, num_examples=N, seed=0, ema_decay=0.5
    )


def trained(gan, iterations=6):
    """A few SGD iterations, so the current, average and EMA weights differ."""
    gan.compile(optimizer=keras.optimizers.SGD(0.5))
    rng = np.random.default_rng(2)
    x = rng.normal(size=(N, PIXELS)).astype("float32")
    order = np.array([rng.choice(N, 4, replace=False) for _ in range(iterations)])
    gan.fit(minibatches((order, x[order])), verbose=0)
    return gan


def manual_statistics(gan, which, latents, batch_size):
    """Each BatchNorm's batch mean and (biased) variance, averaged over batches.

    Computed with a copy of the generator holding `which`'s weights, from the
    inputs of its BatchNorm layers in a training-mode pass (earlier BatchNorm
    layers normalising with their batch's statistics).
    """
    copy = keras.models.clone_model(gan.generator)
    copy(np.zeros((1, LATENT), "float32"))
    for variable, value in zip(copy.trainable_variables, gan.generator_weights(which)):
        variable.assign(value)
    means, variances = [], []
    for start in range(0, len(latents), batch_size):
        # Layer by layer, keeping what each BatchNorm sees (the copy's state
        # moves, which does not matter: it is thrown away).
        x, seen = latents[start : start + batch_size], []
        for layer in copy.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                seen.append(numpy(x).astype("float64"))
            x = layer(x, training=True)
        means.append([v.mean(axis=0) for v in seen])
        variances.append([v.var(axis=0) for v in seen])
    norms = [
        layer
        for layer in copy.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    return (
        [np.mean([m[i] for m in means], axis=0) for i in range(len(norms))],
        [np.mean([v[i] for v in variances], axis=0) for i in range(len(norms))],
        norms,
    )


@pytest.mark.parametrize("which", ["average", "ema", "current"])
def test_statistics_are_those_of_the_generators_own_weights(which):
    gan = trained(batch_norm_gan())
    before = [numpy(v) for v in gan.generator.non_trainable_variables]
    latents = np.random.default_rng(5).normal(size=(40, LATENT)).astype("float32")
    state = gan.update_generator_statistics(which, batch_size=10, latents=latents)
    means, variances, norms = manual_statistics(gan, which, latents, 10)
    positions = {id(v): i for i, v in enumerate(gan.generator.non_trainable_variables)}
    bn_layers = [
        layer
        for layer in gan.generator.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(bn_layers) == len(norms) == 2
    for layer, mean, variance in zip(bn_layers, means, variances):
        got_mean = numpy(state[positions[id(layer.moving_mean)]])
        got_variance = numpy(state[positions[id(layer.moving_variance)]])
        np.testing.assert_allclose(got_mean, mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_variance, variance, rtol=1e-5, atol=1e-6)
    # Nothing of the GAN's own state moved.
    for a, v in zip(before, gan.generator.non_trainable_variables):
        np.testing.assert_array_equal(a, numpy(v))


def test_sampling_uses_each_generators_statistics():
    gan = trained(batch_norm_gan())
    latents = np.random.default_rng(7).normal(size=(5, LATENT)).astype("float32")
    average = gan.generator_model("average")
    statistics = gan.generator_statistics("average")
    for variable, value in zip(average.non_trainable_variables, statistics):
        np.testing.assert_array_equal(numpy(variable), numpy(value))
    np.testing.assert_allclose(
        gan.generate(latents, which="average"),
        numpy(average(latents, training=False)),
        rtol=1e-5,
        atol=1e-6,
    )
    # The statistics differ between the generators, and from the moving ones.
    moving = [numpy(v) for v in gan.generator.non_trainable_variables]
    current = [numpy(v) for v in gan.generator_statistics("current")]
    assert not np.allclose(current[0], numpy(statistics[0]))
    assert not np.allclose(current[0], moving[0])


def test_statistics_follow_the_weights():
    gan = trained(batch_norm_gan(), iterations=2)
    first = [numpy(v) for v in gan.generator_statistics("current")]
    again = [numpy(v) for v in gan.generator_statistics("current")]
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, PIXELS)).astype("float32")
    order = np.arange(4).reshape(1, 4)
    gan.fit(minibatches((order, x[order])), verbose=0)
    later = [numpy(v) for v in gan.generator_statistics("current")]
    assert not np.allclose(first[0], later[0])


def test_a_generator_without_batch_norm_is_unchanged():
    gan = trained(batch_norm_gan(batch_norm=False))
    assert gan.generator_statistics("average") == []
    latents = np.ones((2, LATENT), "float32")
    copy = gan.generator_model("average")
    np.testing.assert_allclose(
        gan.generate(latents, which="average"), numpy(copy(latents)), rtol=1e-6
    )


def test_bad_arguments_say_the_rule():
    gan = batch_norm_gan()
    with pytest.raises(ValueError, match="`num_samples` must be a positive integer"):
        gan.update_generator_statistics("current", num_samples=0)
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        gan.update_generator_statistics("current", batch_size=2.5)
