"""The GAN game: each method against NumPy, state handling, the finite sum, saving."""

import keras
import numpy as np
import pytest

import keras_svre
from tests import numpy_reference as ref
from tests.backend_helpers import BACKEND, batched, latent_bank, minibatches, numpy

pytestmark = pytest.mark.jax

N, LATENT, PIXELS = 12, 3, 4


def linear_gan(dtype="float64", seed=0, **kwargs):
    keras.utils.set_random_seed(seed)
    generator = keras.Sequential(
        [keras.Input((LATENT,), dtype=dtype), keras.layers.Dense(PIXELS, dtype=dtype)],
        name="g",
    )
    discriminator = keras.Sequential(
        [keras.Input((PIXELS,), dtype=dtype), keras.layers.Dense(1, dtype=dtype)],
        name="d",
    )
    return keras_svre.GAN(
        generator, discriminator, num_examples=N, seed=seed, dtype=dtype, **kwargs
    )


def images(seed=1):
    return np.random.default_rng(seed).normal(size=(N, PIXELS))


def indexed(x, order):
    """`(index, image)` minibatches in a given order of index lists."""
    order = np.asarray(order, np.int64)
    return minibatches((order, x[order]))


def all_examples(x, batch_size):
    """Every example once, in order: the snapshot data."""
    return batched((np.arange(len(x), dtype=np.int64), x), batch_size)


def flat(variables):
    return np.concatenate([np.ravel(v.numpy()) for v in variables])


METHODS = [
    ("sgda", lambda: keras.optimizers.SGD(0.1), "sgda", {}),
    ("ogda", lambda: keras_svre.optimizers.get("ogda", 0.1), "ogda", {}),
    (
        "optimistic-adam",
        lambda: keras_svre.optimizers.get("optimistic-adam", 0.05, beta_1=0.5),
        "ogda",
        {"adaptive": "adam", "beta_1": 0.5},
    ),
    ("se", lambda: keras_svre.Extragradient(0.1), "se", {}),
    (
        "se-a",
        lambda: keras_svre.optimizers.get("se-a", 0.05, beta_1=0.5),
        "se",
        {"adaptive": "adam", "beta_1": 0.5},
    ),
    (
        "svre",
        lambda: keras_svre.SVRE(0.1, restart_probability=0.3),
        "svre",
        {"restart_probability": 0.3},
    ),
    (
        "svre-vrad",
        lambda: keras_svre.optimizers.get(
            "svre-vrad", 0.05, beta_1=0.5, restart_probability=0.3
        ),
        "svre",
        {"adaptive": "adam", "beta_1": 0.5, "restart_probability": 0.3},
    ),
]


@pytest.mark.parametrize("case", METHODS, ids=[m[0] for m in METHODS])
def test_each_method_matches_numpy(case):
    _, factory, method, kwargs = case
    x = images()
    # The NumPy model's finite sum has one fixed set of latents.
    gan = linear_gan(latents="fixed")
    optimizer = factory()
    gan.compile(optimizer=optimizer)
    k = 1 if method in ("sgda", "ogda") else 2
    iterations = 6
    rng = np.random.default_rng(5)
    order = [rng.choice(N, 4, replace=False) for _ in range(iterations * k)]
    field = ref.LinearGANField(x, latent_bank(gan))
    lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    theta, phi, _ = ref.run(
        field,
        flat(gan.generator.trainable_variables),
        flat(gan.discriminator.trainable_variables),
        [list(b) for b in order],
        method,
        lr,
        seed=gan.seed,
        **kwargs,
    )
    fit_kwargs = {}
    if method == "svre":
        fit_kwargs["snapshot_data"] = all_examples(x, 5)
    gan.fit(indexed(x, order), verbose=0, **fit_kwargs)
    np.testing.assert_allclose(
        flat(gan.generator.trainable_variables), theta, rtol=1e-9
    )
    np.testing.assert_allclose(
        flat(gan.discriminator.trainable_variables), phi, rtol=1e-9
    )


def test_same_latent_for_the_same_example():
    gan = linear_gan()
    x = images()
    batch = (np.array([3, 7]), x[[3, 7]])
    first = gan.compute_player_losses(batch)
    second = gan.compute_player_losses(batch)
    assert float(first["generator"]) == float(second["generator"])
    np.testing.assert_array_equal(
        numpy(gan.latents(np.array([7, 3]))), latent_bank(gan)[[7, 3]]
    )


def test_paired_evaluations_agree_at_the_snapshot():
    """Right after a snapshot, F_i(w) and F_i(w_S) coincide on every minibatch."""
    gan = linear_gan()
    x = images()
    gan.compile(optimizer=keras_svre.SVRE(0.1))
    gan.take_snapshot(all_examples(x, 6))
    for i in range(0, N, 4):
        batch = (np.arange(i, i + 4), x[i : i + 4])
        g, _ = gan.field(batch, gan.current_point())
        g_s, _ = gan.field(batch, gan.snapshot_point())
        for a, b in zip(g, g_s):
            np.testing.assert_array_equal(numpy(a), numpy(b))


def batchnorm_gan():
    generator = keras.Sequential(
        [
            keras.Input((LATENT,)),
            keras.layers.Dense(PIXELS),
            keras.layers.BatchNormalization(momentum=0.5),
        ],
        name="g",
    )
    discriminator = keras.Sequential(
        [keras.Input((PIXELS,)), keras.layers.Dense(1)], name="d"
    )
    return keras_svre.GAN(
        generator, discriminator, num_examples=N, seed=0, latents="fixed"
    )


def test_batchnorm_statistics_move_only_at_the_current_point():
    gan = batchnorm_gan()
    x = images().astype("float32")
    gan.compile(optimizer=keras_svre.SVRE(0.1, restart_probability=1e-9))
    # The expected statistics: one training-mode forward pass of a copy of the
    # generator on minibatch i only.
    copy = keras.models.clone_model(gan.generator)
    copy.set_weights(gan.generator.get_weights())
    i, j = [0, 1, 2, 3], [4, 5, 6, 7]
    copy(latent_bank(gan)[i], training=True)
    gan.fit(indexed(x, [i, j]), snapshot_data=all_examples(x, 6), verbose=0)
    bn, bn_copy = gan.generator.layers[-1], copy.layers[-1]
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), bn_copy.moving_mean.numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), bn_copy.moving_variance.numpy(), rtol=1e-6
    )


def test_snapshot_pass_leaves_batchnorm_statistics():
    gan = batchnorm_gan()
    gan.compile(optimizer=keras_svre.SVRE(0.1))
    before = [v.numpy() for v in gan.generator.non_trainable_variables]
    gan.take_snapshot(all_examples(images().astype("float32"), 5))
    for a, v in zip(before, gan.generator.non_trainable_variables):
        np.testing.assert_array_equal(a, v.numpy())


def test_averaged_generators_follow_the_iterates():
    gan = linear_gan()
    x = images()
    gan.compile(optimizer=keras.optimizers.SGD(0.1))
    kernels = [gan.generator.trainable_variables[0].numpy()]
    order = [[0, 1], [2, 3], [4, 5]]
    for b in order:
        gan.fit(indexed(x, [b]), verbose=0)
        kernels.append(gan.generator.trainable_variables[0].numpy())
    np.testing.assert_allclose(
        gan.generator_average[0].numpy(), np.mean(kernels[1:], axis=0)
    )
    ema = np.zeros_like(kernels[0])
    for k in kernels[1:]:
        ema = 0.999 * ema + 0.001 * k
    np.testing.assert_allclose(gan.generator_ema[0].numpy(), ema, rtol=1e-9)
    debiased = numpy(gan.generator_weights("ema")[0])
    np.testing.assert_allclose(debiased, ema / (1 - 0.999**3), rtol=1e-9)
    out = gan.generate(np.ones((2, LATENT)), which="average")
    expected = (
        np.ones((2, LATENT)) @ gan.generator_average[0].numpy()
        + gan.generator_average[1].numpy()
    )
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_default_generator_is_what_generate_samples_and_is_saved(tmp_path):
    gan = linear_gan()
    gan.compile(optimizer=keras.optimizers.SGD(0.1))
    gan.fit(indexed(images(), [[0, 1], [2, 3]]), verbose=0)
    latents = np.ones((2, LATENT))
    by_name = {w: gan.generate(latents, which=w) for w in ("ema", "average", "current")}
    assert not np.allclose(by_name["ema"], by_name["current"])
    np.testing.assert_array_equal(gan.generate(latents), by_name["ema"])
    gan.default_generator = "current"
    np.testing.assert_array_equal(gan.generate(latents), by_name["current"])
    gan.save(tmp_path / "gan.keras")
    loaded = keras.models.load_model(tmp_path / "gan.keras")
    assert loaded.default_generator == "current"
    np.testing.assert_allclose(loaded.generate(latents), by_name["current"], rtol=1e-6)
    with pytest.raises(ValueError, match="Received: default_generator='best'"):
        linear_gan(default_generator="best")


def test_reset_averages_restarts_both_averaged_generators():
    gan = linear_gan()
    gan.compile(optimizer=keras.optimizers.SGD(0.1))
    gan.fit(indexed(images(), [[0, 1], [2, 3]]), verbose=0)
    gan.reset_averages()
    current = [v.numpy() for v in gan.generator.trainable_variables]
    for which in ("average", "ema"):
        for a, b in zip(gan.generator_weights(which), current):
            np.testing.assert_array_equal(numpy(a), b)
    gan.fit(indexed(images(), [[4, 5]]), verbose=0)
    after = [v.numpy() for v in gan.generator.trainable_variables]
    assert not np.allclose(after[0], current[0])
    # One iterate since the restart: both averages are that iterate.
    for which in ("average", "ema"):
        for a, b in zip(gan.generator_weights(which), after):
            np.testing.assert_allclose(numpy(a), b, rtol=1e-12)


def test_save_load_round_trip_and_resume(tmp_path):
    x = images()
    order = [
        list(np.random.default_rng(s).choice(N, 4, replace=False)) for s in range(8)
    ]
    snapshot = all_examples(x, N)

    def fresh():
        gan = linear_gan()
        gan.compile(
            generator_optimizer=keras_svre.SVRE(0.05, restart_probability=0.5),
            discriminator_optimizer=keras_svre.SVRE(0.1, restart_probability=0.5),
        )
        return gan

    straight = fresh()
    straight.fit(indexed(x, order), snapshot_data=snapshot, epochs=2, verbose=0)
    first = fresh()
    first.fit(indexed(x, order), snapshot_data=snapshot, epochs=1, verbose=0)
    first.save(tmp_path / "gan.keras")
    loaded = keras.models.load_model(tmp_path / "gan.keras")
    for a, b in zip(first.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for opt_a, opt_b in zip(first.game_optimizers, loaded.game_optimizers):
        assert opt_a.get_config() == opt_b.get_config()
        for a, b in zip(opt_a.variables, opt_b.variables):
            np.testing.assert_array_equal(numpy(a), numpy(b))
    loaded.fit(indexed(x, order), snapshot_data=snapshot, epochs=1, verbose=0)
    for a, b in zip(straight.trainable_weights, loaded.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


def test_bad_inputs_are_refused_clearly():
    gan = linear_gan()
    gan.compile(optimizer=keras_svre.SVRE(0.1))
    x = images()
    with pytest.raises(ValueError, match="index, image"):
        gan.fit(batched(x, 2), verbose=0)
    wrong = batched((np.arange(N), np.zeros((N, 5))), 2)
    with pytest.raises(ValueError, match="must match"):
        gan.fit(wrong, verbose=0)
    if BACKEND == "tensorflow":
        with pytest.raises(ValueError, match="finite"):
            gan.fit(all_examples(x, 2).repeat(), steps_per_epoch=1, verbose=0)
    else:
        with pytest.raises(ValueError, match="num_examples"):
            gan.fit(batched((np.arange(N) + N, x), 2), verbose=0)
    with pytest.raises(ValueError, match="num_examples"):
        keras_svre.GAN(gan.generator, gan.discriminator)
    with pytest.raises(ValueError, match="Unknown GAN loss"):
        keras_svre.GAN(gan.generator, gan.discriminator, num_examples=N, loss="l2")


@pytest.mark.parametrize("loss", ["non_saturating", "hinge", "wasserstein"])
def test_losses_by_hand(loss):
    real, fake = np.array([0.5, -1.0, 2.0]), np.array([-0.3, 1.5, 0.0])
    pair = keras_svre.losses.get(loss)
    softplus = lambda t: np.log1p(np.exp(t))  # noqa: E731
    expected = {
        "non_saturating": (
            softplus(-real).mean() + softplus(fake).mean(),
            softplus(-fake).mean(),
        ),
        "hinge": (
            np.maximum(0, 1 - real).mean() + np.maximum(0, 1 + fake).mean(),
            -fake.mean(),
        ),
        "wasserstein": (fake.mean() - real.mean(), -fake.mean()),
    }[loss]
    assert float(pair.discriminator_loss(real, fake)) == pytest.approx(
        expected[0], rel=1e-6
    )
    assert float(pair.generator_loss(fake)) == pytest.approx(expected[1], rel=1e-6)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            {"num_examples": "128"},
            "Argument `num_examples` (the number of training examples) must be a "
            "positive integer. Received: num_examples='128'.",
        ),
        (
            {"num_examples": 12.0},
            "Received: num_examples=12.0.",
        ),
        (
            {"num_examples": 0},
            "Received: num_examples=0.",
        ),
        (
            {"num_examples": N, "latent_dim": "3"},
            "Argument `latent_dim` must be a positive integer. Received: "
            "latent_dim='3'.",
        ),
        (
            {"num_examples": N, "ema_decay": "0.999"},
            "Argument `ema_decay` must be a number in [0, 1). Received: "
            "ema_decay='0.999'.",
        ),
    ],
)
def test_wrongly_typed_arguments_are_refused(arguments, message):
    gan = linear_gan()
    with pytest.raises(ValueError) as raised:
        keras_svre.GAN(gan.generator, gan.discriminator, **arguments)
    assert message in str(raised.value)
    assert (
        keras_svre.GAN(
            gan.generator, gan.discriminator, num_examples=np.int64(N)
        ).num_examples
        == N
    )


@pytest.mark.skipif(
    BACKEND != "tensorflow", reason="Keras exports SavedModels with TensorFlow"
)
def test_export_writes_the_default_generator(tmp_path):
    import tensorflow as tf

    gan = linear_gan(dtype="float32")
    gan.compile(optimizer=keras_svre.SVRE(0.1))
    gan.export(tmp_path / "generator", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "generator"))
    latents = np.random.default_rng(0).normal(size=(5, LATENT)).astype("float32")
    np.testing.assert_allclose(
        served.serve(latents).numpy(), numpy(gan.generate(latents)), rtol=1e-6
    )
