"""Tests for keras_svre.models: the paper's generator/discriminator networks."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_svre import models
from keras_svre.models.layers import SpectralNorm

LATENT_DIM = 16
BATCH = 3
# Tiny channel multipliers keep every network under ~50k parameters.
TINY_WIDTH = {"mnist_dcgan": 2, "dcgan32": 4, "dcgan32_sa": 8, "resnet32": 8}
IMAGE_SHAPES = {
    "mnist_dcgan": (28, 28, 1),
    "dcgan32": (32, 32, 3),
    "dcgan32_sa": (32, 32, 3),
    "resnet32": (32, 32, 3),
}
ARCHITECTURES = sorted(TINY_WIDTH)


def tiny_networks(name: str, **kwargs) -> tuple[keras.Model, keras.Model]:
    return models.get_networks(
        name, latent_dim=LATENT_DIM, width=TINY_WIDTH[name], **kwargs
    )


def latent(batch: int = BATCH) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(batch, LATENT_DIM)).astype("float32")


def images(name: str, batch: int = BATCH) -> np.ndarray:
    shape = (batch, *IMAGE_SHAPES[name])
    return np.random.default_rng(1).uniform(-1, 1, size=shape).astype("float32")


def snapshot(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.variables]


def assert_unchanged(model: keras.Model, before: list[np.ndarray]) -> None:
    for variable, value in zip(model.variables, before, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)


def spectral_layers(model: keras.Model) -> list[SpectralNorm]:
    return [layer for layer in model.layers if isinstance(layer, SpectralNorm)]


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("training", [False, True])
def test_output_shapes_and_ranges(name, training):
    generator, discriminator = tiny_networks(name)
    fake = generator(latent(), training=training)
    assert tuple(fake.shape) == (BATCH, *IMAGE_SHAPES[name])
    assert np.all(np.abs(fake.numpy()) <= 1.0)
    logits = discriminator(fake, training=training)
    assert tuple(logits.shape) == (BATCH, 1)
    assert np.all(np.isfinite(logits.numpy()))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_variables_exist_right_after_construction(name):
    generator, discriminator = tiny_networks(name)
    for model in (generator, discriminator):
        assert model.built
        assert model.count_params() > 0
        assert len(model.trainable_variables) > 0
    assert generator.input_shape == (None, LATENT_DIM)
    assert discriminator.input_shape == (None, *IMAGE_SHAPES[name])
    assert models.image_shape(name) == IMAGE_SHAPES[name]


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_keras_file_round_trip_gives_identical_outputs(name, tmp_path):
    generator, discriminator = tiny_networks(name)
    z, x = latent(), images(name)
    # A training call first, so that u and batch-norm statistics are not at
    # their initial values when saved.
    discriminator(x, training=True)
    generator(z, training=True)
    for model, inputs in ((generator, z), (discriminator, x)):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)
        np.testing.assert_array_equal(
            loaded(inputs, training=False).numpy(),
            model(inputs, training=False).numpy(),
        )
        for original, restored in zip(model.variables, loaded.variables, strict=True):
            np.testing.assert_array_equal(original.numpy(), restored.numpy())


@pytest.mark.parametrize("name", ARCHITECTURES)
@pytest.mark.parametrize("training", [False, True])
def test_stateless_call_uses_given_values_and_leaves_model_alone(name, training):
    generator, discriminator = tiny_networks(name)
    for model, inputs in ((generator, latent()), (discriminator, images(name))):
        before = snapshot(model)
        reference = model(inputs, training=False).numpy()
        assert_unchanged(model, before)
        rng = np.random.default_rng(2)
        perturbed = [
            v.numpy() + 0.1 * rng.normal(size=v.shape).astype("float32")
            for v in model.trainable_variables
        ]
        outputs, non_trainable = model.stateless_call(
            perturbed,
            [v.value for v in model.non_trainable_variables],
            inputs,
            training=training,
        )
        assert outputs.shape == reference.shape
        assert not np.allclose(outputs.numpy(), reference)
        assert len(non_trainable) == len(model.non_trainable_variables)
        assert_unchanged(model, before)
        same, _ = model.stateless_call(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            inputs,
            training=False,
        )
        np.testing.assert_allclose(same.numpy(), reference, rtol=1e-5, atol=1e-6)


def test_spectral_norm_u_moves_only_in_training_calls():
    _, discriminator = tiny_networks("dcgan32")
    layers = spectral_layers(discriminator)
    assert len(layers) == 3
    x = images("dcgan32")
    kernels = [layer.layer.kernel.numpy() for layer in layers]
    u_before = [layer.vector_u.numpy() for layer in layers]

    discriminator(x, training=False)
    for layer, u in zip(layers, u_before, strict=True):
        np.testing.assert_array_equal(layer.vector_u.numpy(), u)

    discriminator(x, training=True)
    for layer, u, kernel in zip(layers, u_before, kernels, strict=True):
        assert not np.allclose(layer.vector_u.numpy(), u)
        # The trainable kernel is never written by a forward pass.
        np.testing.assert_array_equal(layer.layer.kernel.numpy(), kernel)


def test_spectral_norm_stateless_call_returns_new_u_without_assigning_it():
    _, discriminator = tiny_networks("dcgan32")
    layers = spectral_layers(discriminator)
    x = images("dcgan32")
    before = snapshot(discriminator)
    u_index = {id(v): i for i, v in enumerate(discriminator.non_trainable_variables)}
    for training, moved in ((False, False), (True, True)):
        _, non_trainable = discriminator.stateless_call(
            [v.value for v in discriminator.trainable_variables],
            [v.value for v in discriminator.non_trainable_variables],
            x,
            training=training,
        )
        for layer in layers:
            new_u = np.asarray(non_trainable[u_index[id(layer.vector_u)]])
            assert moved != np.allclose(new_u, layer.vector_u.numpy())
        assert_unchanged(discriminator, before)


def test_spectral_norm_bounds_the_kernel_spectral_norm():
    layer = SpectralNorm(keras.layers.Dense(5), name="dense_sn")
    x = np.random.default_rng(3).normal(size=(4, 7)).astype("float32")
    layer(x)
    layer.layer.kernel.assign(3.0 * layer.layer.kernel.numpy())
    for _ in range(50):
        layer(x, training=True)
    normalized = layer.normalized_kernel(training=False).numpy()
    sigma = np.linalg.svd(normalized, compute_uv=False)[0]
    assert sigma == pytest.approx(1.0, abs=1e-4)


def test_spectral_norm_gradient_is_the_same_through_stateless_call():
    _, discriminator = tiny_networks("dcgan32")
    x = tf.constant(images("dcgan32"))
    with tf.GradientTape() as tape:
        direct = tf.reduce_sum(discriminator(x, training=False))
    expected = tape.gradient(direct, discriminator.trainable_variables)

    values = [tf.identity(v.value) for v in discriminator.trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch(values)
        outputs, _ = discriminator.stateless_call(
            values, [v.value for v in discriminator.non_trainable_variables], x
        )
        stateless = tf.reduce_sum(outputs)
    received = tape.gradient(stateless, values)
    for want, got in zip(expected, received, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


def test_keras_builtin_spectral_normalization_writes_the_kernel():
    # Why models use SpectralNorm: Keras' wrapper overwrites the trainable
    # kernel with W / sigma on every training call.
    layer = keras.layers.SpectralNormalization(keras.layers.Dense(3))
    x = np.ones((2, 4), dtype="float32")
    layer(x)
    kernel = layer.layer.kernel.numpy()
    layer(x, training=True)
    assert not np.allclose(layer.layer.kernel.numpy(), kernel)


def test_self_attention_starts_as_identity_and_round_trips_config():
    attention = models.SelfAttention(reduction=4, name="attention")
    x = np.random.default_rng(4).normal(size=(2, 3, 3, 8)).astype("float32")
    np.testing.assert_allclose(attention(x).numpy(), x, rtol=0, atol=0)
    assert attention.query.filters == 2
    assert attention.value.filters == 8
    attention.gamma.assign(0.5)
    assert not np.allclose(attention(x).numpy(), x)
    clone = models.SelfAttention.from_config(attention.get_config())
    assert clone.reduction == 4


def test_attention_only_in_the_sa_variant():
    def attention_count(model):
        return sum(isinstance(layer, models.SelfAttention) for layer in model.layers)

    plain = tiny_networks("dcgan32")
    attended = tiny_networks("dcgan32_sa")
    assert [attention_count(m) for m in plain] == [0, 0]
    assert [attention_count(m) for m in attended] == [2, 1]


def test_mnist_networks_follow_the_reference_shapes():
    generator = models.mnist_generator(latent_dim=LATENT_DIM, width=2)
    discriminator = models.mnist_discriminator(width=2)
    shapes = [generator.get_layer(f"relu{i}").output.shape[1:] for i in (1, 2, 3)]
    assert shapes == [(3, 3, 16), (6, 6, 8), (14, 14, 4)]
    shapes = [discriminator.get_layer(f"lrelu{i}").output.shape[1:] for i in (1, 2, 3)]
    assert shapes == [(14, 14, 2), (7, 7, 4), (3, 3, 8)]
    assert not spectral_layers(discriminator)
    assert len(spectral_layers(models.mnist_discriminator(spectral_norm=True))) == 4


def test_mnist_generator_without_batch_norm():
    generator = models.mnist_generator(latent_dim=LATENT_DIM, batch_norm=False, width=2)
    assert not generator.non_trainable_variables
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in generator.layers
    )


def test_get_returns_builders_and_rejects_unknown_names():
    generator_fn, discriminator_fn = models.get("mnist_dcgan")
    assert generator_fn is models.mnist_generator
    assert discriminator_fn is models.mnist_discriminator
    with pytest.raises(ValueError, match="dcgan32_sa.*mnist_dcgan.*resnet32"):
        models.get("stylegan")
    with pytest.raises(ValueError, match="Unknown architecture"):
        models.get_networks("stylegan")


def test_get_networks_routes_keyword_arguments():
    _, discriminator = models.get_networks("mnist_dcgan", width=2, spectral_norm=True)
    assert len(spectral_layers(discriminator)) == 4
    _, discriminator = models.get_networks("resnet32", width=4, spectral_norm=False)
    assert not spectral_layers(discriminator)
    with pytest.raises(ValueError, match="takes no argument"):
        models.get_networks("resnet32", width=4, batch_norm=False)


@pytest.mark.parametrize("width", [0, -1, 2.5])
def test_invalid_width_is_rejected(width):
    with pytest.raises(ValueError, match="Argument `width` must be a positive"):
        models.dcgan32_discriminator(width=width)
