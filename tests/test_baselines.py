"""The baselines: optimistic methods (OGDA, optimistic Adam), gradient penalties
and alternating updates (n_dis).

`keras_svre.Optimistic` is checked as Keras checks its optimizers (a
serialisation round trip, steps by hand, a golden trajectory against NumPy)
and, in a `Game`, step by step against the NumPy model of the methods
(`tests/numpy_reference.py`). The GAN's gradient penalties (WGAN-GP, R1) are
checked against NumPy: their values on a small tanh discriminator, their
gradients (analytic on a linear discriminator, finite differences on the
tanh one), and whole training runs with SVRE and Adam on the linear GAN.
Alternating updates are checked step by step against the NumPy model
(`numpy_reference.run_alternating`) on the bilinear game with SGDA, Adam,
OGDA and optimistic Adam, and on the linear GAN with Adam and WGAN-GP.
"""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_svre
from keras_svre import Optimistic, cli, run
from keras_svre.optimizers import methods
from keras_svre.run import ConfigError, RunConfig
from tests import backend_helpers
from tests import numpy_reference as ref
from tests.backend_helpers import interpolation_draws, latent_bank
from tests.cli_helpers import TINY, fails_cleanly
from tests.optimizer_helpers import (
    apply_in_game_step,
    assert_close,
    assert_round_trip,
    f32,
    variable,
)


# ---------------------------------------------------------------------- #
# Optimistic: configuration, steps, slots.
# ---------------------------------------------------------------------- #
def test_config():
    optimizer = Optimistic(0.5, adaptive="adam", beta_1=0.5, epsilon=1e-6)
    config = assert_round_trip(optimizer)
    assert config["name"] == "optimistic"
    assert (config["adaptive"], config["beta_1"], config["epsilon"]) == (
        "adam",
        0.5,
        1e-6,
    )
    assert assert_round_trip(Optimistic())["adaptive"] is None
    # By its lower-case name, as Keras' own optimizers.
    assert type(keras.optimizers.get("optimistic")) is Optimistic


def test_method_table_entries():
    for name, adaptive, lr, adam_based in (
        ("ogda", None, 1e-2, False),
        ("optimistic-adam", "adam", 1e-3, True),
    ):
        entry = methods.method(name)
        assert (entry.extrapolates, entry.variance_reduced) == (False, False)
        assert entry.minibatches_per_iteration() == 1
        assert entry.evaluations_per_iteration() == 1
        assert (entry.learning_rate, entry.adam_based) == (lr, adam_based)
        optimizer = keras_svre.optimizers.get(name)
        assert type(optimizer) is Optimistic and optimizer.adaptive == adaptive
    with pytest.raises(ValueError, match="choose the method that has"):
        keras_svre.optimizers.get("optimistic-adam", adaptive=None)


def test_two_steps_by_hand():
    w = variable([1.0, 2.0])
    optimizer = Optimistic(0.5)
    optimizer.build([w])
    # s_0 = 0: the first step is 2 * lr * g_1.
    apply_in_game_step(optimizer, [[1.0, -4.0]], [w])
    assert_close(w, [0.0, 6.0])
    assert_close(optimizer._previous_steps[0], [1.0, -4.0])
    # w - lr * (2 g_2 - g_1) = [0, 6] - 0.5 * [3, 8].
    apply_in_game_step(optimizer, [[2.0, 2.0]], [w])
    assert_close(w, [-1.5, 2.0])
    assert_close(optimizer._previous_steps[0], [2.0, 2.0])


@pytest.mark.parametrize("adaptive", [None, "adam", "vrad"])
def test_correctness_with_golden(adaptive):
    """Six iterations on a linear field against the NumPy rule."""
    rng = np.random.default_rng(0)
    n, dim = 4, 3
    a = rng.normal(size=(n, dim, dim))
    c = rng.normal(size=(n, dim))
    lr = f32(0.05)
    w = variable(rng.normal(size=dim))
    optimizer = Optimistic(0.05, adaptive=adaptive, beta_1=0.5, beta_2=0.75)
    optimizer.build([w])

    ref_w, m, v, previous = w.numpy().copy(), np.zeros(dim), np.zeros(dim), 0.0
    order = [0, 2, 1, 3, 3, 0]
    for t, i in enumerate(order, start=1):
        step, m, v = ref.numpy_step(
            adaptive, a[i] @ ref_w + c[i], m, v, t, beta_1=0.5, beta_2=0.75
        )
        ref_w = ref_w - lr * (2.0 * step - previous)
        previous = step
        apply_in_game_step(optimizer, [a[i] @ w.numpy() + c[i]], [w])
        assert_close(w, ref_w)
        assert_close(optimizer._previous_steps[0], step)
    if adaptive:
        assert_close(optimizer._momentums[0], m)
        assert_close(optimizer._velocities[0], v)
    assert int(optimizer.iterations.numpy()) == len(order)


def test_slots():
    w = variable([1.0, 2.0])
    optimizer = Optimistic(0.1, adaptive="adam")
    optimizer.build([w])
    names = [v.name for v in optimizer.variables]
    assert any("previous_step" in name for name in names)
    assert any("momentum" in name for name in names)
    assert optimizer._previous_steps[0].dtype == "float64"


def test_plain_fit_works_and_matches_numpy():
    """Not a look-ahead method: an ordinary Keras model trains with it."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(8, 1))
    w0 = rng.normal(size=(3, 1))
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(
                1,
                use_bias=False,
                kernel_initializer=keras.initializers.Constant(w0),
            ),
        ]
    )
    model.compile(optimizer=Optimistic(0.1), loss="mse")
    model.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    w, previous = w0, 0.0
    for _ in range(3):
        gradient = 2.0 / len(x) * x.T @ (x @ w - y)
        w = w - f32(0.1) * (2.0 * gradient - previous)
        previous = gradient
    np.testing.assert_allclose(model.layers[0].kernel.numpy(), w, rtol=1e-5)


# ---------------------------------------------------------------------- #
# Optimistic in a Game.
# ---------------------------------------------------------------------- #
DIM = 6


def bilinear_minibatches(count, seed=7):
    rng = np.random.default_rng(seed)
    return [list(rng.choice(DIM, 2, replace=False)) for _ in range(count)]


@pytest.mark.jax
@pytest.mark.parametrize("adaptive", [None, "adam"])
def test_game_matches_numpy_step_by_step(adaptive):
    game = keras_svre.BilinearGame(dim=DIM, seed=3)
    field = ref.BilinearField(game.a.numpy(), game.b.numpy())
    x0, y0 = game.x.numpy(), game.y.numpy()
    optimizer = Optimistic(0.1, adaptive=adaptive, beta_1=0.5)
    game.compile(optimizer=optimizer)
    lr = f32(0.1)
    minibatches = bilinear_minibatches(5)
    for t in range(len(minibatches)):
        data = slices(np.array(minibatches[t : t + 1]))
        game.fit(data, verbose=0)
        x, y, _ = ref.run(
            field,
            x0,
            y0,
            minibatches[: t + 1],
            "ogda",
            lr,
            adaptive=adaptive,
            beta_1=0.5,
        )
        np.testing.assert_allclose(game.x.numpy(), x, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(game.y.numpy(), y, rtol=1e-12, atol=1e-14)
    assert game.minibatches_per_iteration == 1
    assert game.evaluations_per_iteration == 1


@pytest.mark.jax
def test_save_load_then_train_equals_uninterrupted(tmp_path):
    def data():
        return slices(np.array(bilinear_minibatches(6)))

    def fresh():
        game = keras_svre.BilinearGame(dim=DIM, seed=3)
        game.compile(optimizer=keras_svre.optimizers.get("optimistic-adam", 0.05))
        return game

    straight = fresh()
    straight.fit(data(), epochs=2, verbose=0)
    first = fresh()
    first.fit(data(), epochs=1, verbose=0)
    first.save(tmp_path / "game.keras")
    loaded = keras.models.load_model(tmp_path / "game.keras")
    assert isinstance(loaded.optimizer, Optimistic)
    for a, b in zip(first.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    loaded.fit(data(), epochs=1, verbose=0)
    np.testing.assert_allclose(loaded.x.numpy(), straight.x.numpy(), rtol=1e-12)
    np.testing.assert_allclose(loaded.y.numpy(), straight.y.numpy(), rtol=1e-12)


# ---------------------------------------------------------------------- #
# Gradient penalties.
# ---------------------------------------------------------------------- #
N, LATENT, PIXELS, HIDDEN = 12, 3, 4, 3
WEIGHT = 3.0


@keras.saving.register_keras_serializable(package="test_baselines")
def tanh64(x):
    """tanh in the input's precision on both backends.

    Keras' `ops.tanh` computes in float32 on JAX (it promotes float64 with a
    Python float to float32 there); `exp` keeps float64.
    """
    return 1.0 - 2.0 / (keras.ops.exp(2.0 * x) + 1.0)


def gan(penalty, hidden=False, weight=WEIGHT, batch_norm=False, seed=0):
    """A linear generator; a linear discriminator, or a tanh one with `hidden`.

    `batch_norm`: both networks end in batch normalisation (float32).
    """
    dtype = "float32" if batch_norm else "float64"
    keras.utils.set_random_seed(seed)
    generator_layers = [
        keras.Input((LATENT,), dtype=dtype),
        keras.layers.Dense(PIXELS, dtype=dtype),
    ]
    if batch_norm:
        generator_layers.append(keras.layers.BatchNormalization(momentum=0.5))
    generator = keras.Sequential(generator_layers, name="g")
    layers = [keras.Input((PIXELS,), dtype=dtype)]
    if hidden:
        layers.append(keras.layers.Dense(HIDDEN, activation=tanh64, dtype=dtype))
    if batch_norm:
        layers.append(keras.layers.BatchNormalization(momentum=0.5))
    layers.append(keras.layers.Dense(1, dtype=dtype))
    discriminator = keras.Sequential(layers, name="d")
    return keras_svre.GAN(
        generator,
        discriminator,
        num_examples=N,
        seed=seed,
        dtype=dtype,
        gradient_penalty=penalty,
        gradient_penalty_weight=weight,
        # The NumPy models' finite sum has one fixed set of latents.
        latents="fixed",
    )


def images(seed=1):
    return np.random.default_rng(seed).normal(size=(N, PIXELS))


def slices(*arrays):
    """Minibatches, one per row of the arrays (`tf.data` on TensorFlow, NumPy
    minibatches on JAX)."""
    return backend_helpers.minibatches(arrays if len(arrays) > 1 else arrays[0])


def batches(*arrays, size):
    """The arrays cut into minibatches of `size` rows (the last may be smaller)."""
    return backend_helpers.batched(arrays, size)


def batch_of(x, index):
    return (keras.ops.convert_to_tensor(np.array(index, "int64")), x[index])


def numpy_penalty(model, penalty, x, index):
    """The weighted penalty of the tanh discriminator, by hand."""
    W, c = (v.numpy() for v in model.generator.trainable_variables)
    W1, b1, w2, _ = (v.numpy() for v in model.discriminator.trainable_variables)
    real = x[index]
    if penalty == "r1":
        points = real
    else:
        fake = latent_bank(model)[index] @ W + c
        u = interpolation_draws(model)[index][:, None]
        points = u * real + (1.0 - u) * fake
    h = np.tanh(points @ W1 + b1)
    gradients = ((1.0 - h**2) * w2[:, 0]) @ W1.T  # d logit / d point, per row
    norms = np.linalg.norm(gradients, axis=1)
    if penalty == "r1":
        return WEIGHT / 2.0 * np.mean(norms**2)
    return WEIGHT * np.mean((norms - 1.0) ** 2)


@pytest.mark.jax
@pytest.mark.parametrize("penalty", ["r1", "wgan-gp"])
def test_penalty_value_matches_numpy(penalty):
    model = gan(penalty, hidden=True)
    x, index = images(), [0, 3, 5, 11]
    value = float(model.compute_gradient_penalty(batch_of(x, index)))
    assert value > 0
    np.testing.assert_allclose(value, numpy_penalty(model, penalty, x, index), 1e-9)
    # Part of the discriminator's loss, and nothing else (the same seed
    # builds the same networks and noise bank).
    plain = gan(None, hidden=True)
    for a, b in zip(model.trainable_weights, plain.trainable_weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with_penalty = model.compute_player_losses(batch_of(x, index))
    without = plain.compute_player_losses(batch_of(x, index))
    np.testing.assert_allclose(
        float(with_penalty["discriminator"]) - float(without["discriminator"]),
        value,
        rtol=1e-9,
    )
    assert float(with_penalty["generator"]) == float(without["generator"])


@pytest.mark.jax
@pytest.mark.parametrize("penalty", ["r1", "wgan-gp"])
def test_penalty_gradient_on_a_linear_discriminator_is_analytic(penalty):
    """D(x) = x.u + e: the penalty adds w u (R1), 2w (|u| - 1) u / |u| (WGAN-GP)."""
    model, plain = gan(penalty), gan(None)
    model.compile(optimizer=keras_svre.SVRE(0.1))
    plain.compile(optimizer=keras_svre.SVRE(0.1))
    batch = batch_of(images(), [1, 2, 7])
    g, _ = model.field(batch, model.current_point())
    g_plain, _ = plain.field(batch, plain.current_point())
    u = model.discriminator.trainable_variables[0].numpy()
    norm = np.linalg.norm(u)
    expected = WEIGHT * u if penalty == "r1" else 2 * WEIGHT * (norm - 1) * u / norm
    np.testing.assert_allclose(
        np.asarray(g[2]) - np.asarray(g_plain[2]), expected, 1e-9
    )
    np.testing.assert_allclose(np.asarray(g[3]), np.asarray(g_plain[3]), rtol=1e-12)
    for a, b in zip(g[:2], g_plain[:2]):  # The generator's field is unchanged.
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)


@pytest.mark.jax
@pytest.mark.parametrize("penalty", ["r1", "wgan-gp"])
def test_penalty_gradient_matches_finite_differences(penalty):
    """The nested gradient inside the game's stateless evaluation, by differences."""
    model = gan(penalty, hidden=True)
    model.compile(optimizer=keras_svre.SVRE(0.1))
    batch = batch_of(images(), [0, 4, 9])
    point = model.current_point()
    gradients, _ = model.field(batch, point)

    def discriminator_loss(values):
        mapping = list(zip(model.game_variables, values))
        with keras.StatelessScope(state_mapping=mapping):
            return float(model.compute_player_losses(batch)["discriminator"])

    h = 1e-6
    for k in range(2, len(point)):  # The discriminator's variables.
        base = np.asarray(point[k])
        expected = np.zeros_like(base)
        for where in np.ndindex(base.shape):
            values = []
            for sign in (1.0, -1.0):
                moved = base.copy()
                moved[where] += sign * h
                values.append(discriminator_loss([*point[:k], moved, *point[k + 1 :]]))
            expected[where] = (values[0] - values[1]) / (2 * h)
        np.testing.assert_allclose(np.asarray(gradients[k]), expected, atol=1e-8)


TRAINING = [
    (
        "svre",
        lambda: keras_svre.SVRE(0.1, restart_probability=0.3),
        "svre",
        {"restart_probability": 0.3},
    ),
    (
        # Keras' Adam adds epsilon before its bias correction (the NumPy model
        # after it) and rounds the betas through float32 there: with a tiny
        # epsilon and betas exact in float32 both are Adam to rounding.
        "adam",
        lambda: keras.optimizers.Adam(0.05, beta_1=0.5, beta_2=0.875, epsilon=1e-14),
        "sgda",
        {"adaptive": "adam", "beta_1": 0.5, "beta_2": 0.875, "epsilon": 1e-14},
    ),
]


@pytest.mark.jax
@pytest.mark.parametrize("penalty", ["r1", "wgan-gp"])
@pytest.mark.parametrize("case", TRAINING, ids=[c[0] for c in TRAINING])
def test_training_with_a_penalty_matches_numpy(case, penalty):
    """Every evaluation (SVRE's snapshot, look-ahead, snapshot pass) has the penalty."""
    name, factory, method, kwargs = case
    x = images()
    model = gan(penalty)
    optimizer = factory()
    model.compile(optimizer=optimizer)
    k = 2 if method == "svre" else 1
    rng = np.random.default_rng(5)
    order = [list(rng.choice(N, 4, replace=False)) for _ in range(3 * k)]
    field = ref.LinearGANField(x, latent_bank(model), penalty, WEIGHT)
    lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    theta, phi, _ = ref.run(
        field,
        np.concatenate([np.ravel(v.numpy()) for v in model.generator.weights]),
        np.concatenate([np.ravel(v.numpy()) for v in model.discriminator.weights]),
        order,
        method,
        lr,
        seed=model.seed,
        **kwargs,
    )
    data = slices(np.array(order), x[np.array(order)])
    fit_kwargs = {}
    if method == "svre":
        fit_kwargs["snapshot_data"] = batches(np.arange(N), x, size=5)
    history = model.fit(data, verbose=0, **fit_kwargs)
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    actual = [np.ravel(v.numpy()) for v in model.discriminator.weights]
    np.testing.assert_allclose(np.concatenate(actual), phi, rtol=1e-9)
    actual = [np.ravel(v.numpy()) for v in model.generator.weights]
    np.testing.assert_allclose(np.concatenate(actual), theta, rtol=1e-9)
    penalty_value = float(model.compute_gradient_penalty(batch_of(x, [0, 1])))
    u = model.discriminator.trainable_variables[0].numpy()[:, 0]
    norm = np.linalg.norm(u)
    expected = WEIGHT / 2 * norm**2 if penalty == "r1" else WEIGHT * (norm - 1) ** 2
    assert penalty_value > 0
    np.testing.assert_allclose(penalty_value, expected, rtol=1e-9)


@pytest.mark.jax
def test_wgan_gp_draws_are_the_same_at_the_snapshot():
    """F_i(w) and F_i(w_S) coincide right after a snapshot: the same x_hat.

    The losses bit for bit; the gradients to rounding: the snapshot point is
    read from the optimizer's slot variables, and TensorFlow then sums the
    penalty's several gradient paths in another order.
    """
    model = gan("wgan-gp", hidden=True)
    x = images()
    model.compile(optimizer=keras_svre.SVRE(0.1))
    model.take_snapshot(batches(np.arange(N), x, size=6))
    batch = batch_of(x, [2, 5, 8])
    g, losses = model.field(batch, model.current_point())
    g_s, losses_s = model.field(batch, model.snapshot_point())
    for name in ("generator", "discriminator"):
        assert float(losses[name]) == float(losses_s[name])
    for a, b in zip(g, g_s, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-14, atol=1e-15)
    # The same minibatch twice: the same draws.
    again, _ = model.field(batch, model.current_point())
    for a, b in zip(g, again, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.jax
def test_penalty_pass_leaves_batchnorm_statistics():
    """The penalty's extra discriminator pass moves no statistics."""
    x = images().astype("float32")
    data = batches(np.arange(4), x[:4], size=4)
    statistics = []
    for penalty in (None, "r1"):
        model = gan(penalty, batch_norm=True)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        model.fit(data, verbose=0)
        if penalty:  # Nor does the penalty on its own.
            model.compute_gradient_penalty(batch_of(x, [0, 1, 2]))
        nets = (model.generator, model.discriminator)
        statistics.append([v.numpy() for n in nets for v in n.non_trainable_weights])
    for a, b in zip(*statistics, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.jax
def test_saved_and_evaluated(tmp_path):
    model = gan("wgan-gp", hidden=True, weight=2.5)
    config = model.get_config()
    assert (config["gradient_penalty"], config["gradient_penalty_weight"]) == (
        "wgan-gp",
        2.5,
    )
    model.compile(optimizer=keras_svre.optimizers.get("ogda", 0.05))
    x = images()
    data = batches(np.arange(N), x, size=4)
    model.fit(data, verbose=0)
    model.save(tmp_path / "gan.keras")
    loaded = keras.models.load_model(tmp_path / "gan.keras")
    assert loaded.gradient_penalty == "wgan-gp"
    np.testing.assert_array_equal(
        interpolation_draws(loaded), interpolation_draws(model)
    )
    batch = batch_of(x, [1, 6])
    assert float(loaded.compute_gradient_penalty(batch)) == float(
        model.compute_gradient_penalty(batch)
    )
    # Held-out minibatches (other indices) get fresh interpolation draws.
    held_out = batches(np.arange(4) + 100, x[:4], size=2)
    losses = loaded.evaluate(held_out, verbose=0, return_dict=True)
    assert np.isfinite(losses["discriminator_loss"])


INVALID = [
    (
        {"gradient_penalty": "l2"},
        "Argument `gradient_penalty` must be None, 'wgan-gp' or 'r1'. "
        "Received: gradient_penalty='l2'.",
    ),
    (
        {"gradient_penalty": "r1", "gradient_penalty_weight": 0.0},
        "Argument `gradient_penalty_weight` must be a positive number. "
        "Received: gradient_penalty_weight=0.0.",
    ),
    (
        {"gradient_penalty_weight": -1},
        "Argument `gradient_penalty_weight` must be a positive number. "
        "Received: gradient_penalty_weight=-1.",
    ),
    (
        {"gradient_penalty_weight": "10"},
        "Argument `gradient_penalty_weight` must be a positive number. "
        "Received: gradient_penalty_weight='10'.",
    ),
]


@pytest.mark.jax
@pytest.mark.parametrize("arguments, message", INVALID, ids=[m for _, m in INVALID])
def test_invalid_penalty_arguments(arguments, message):
    model = gan(None)
    with pytest.raises(ValueError, match=re.escape(message)):
        keras_svre.GAN(
            model.generator, model.discriminator, num_examples=N, **arguments
        )


@pytest.mark.jax
def test_compute_gradient_penalty_needs_a_penalty():
    with pytest.raises(ValueError, match="has no gradient penalty"):
        gan(None).compute_gradient_penalty(batch_of(images(), [0]))


# ---------------------------------------------------------------------- #
# The command line.
# ---------------------------------------------------------------------- #
def test_command_line_trains_ogda_with_a_penalty(data_dir, tmp_path):
    argv = ["train", *TINY, "--method", "ogda", "--gradient-penalty", "r1"]
    argv += ["--gradient-penalty-weight", "2", "--no-batch-norm", "--steps", "2"]
    argv += ["--batch-size", "64", "--data-dir", data_dir, "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    model = keras.models.load_model(tmp_path / "model.keras")
    assert type(model.optimizer) is Optimistic and model.optimizer.adaptive is None
    assert (model.gradient_penalty, model.gradient_penalty_weight) == ("r1", 2.0)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["iterations"] == summary["minibatch_evaluations"] == 2
    assert np.isfinite(summary["final_losses"]["discriminator_loss"])
    run = json.loads((tmp_path / "run.json").read_text())
    assert (run["method"], run["gradient_penalty"]) == ("ogda", "r1")


def test_command_line_refuses_bad_penalties(capsys):
    fails_cleanly(
        capsys,
        ["train", *TINY, "--gradient-penalty-weight", "0"],
        "--gradient-penalty-weight must be a positive number; received 0.0",
    )
    fails_cleanly(
        capsys,
        ["train", *TINY, "--gradient-penalty", "l2"],
        "unknown --gradient-penalty 'l2'; choose one of wgan-gp, r1 or none",
    )


@pytest.mark.jax
def test_run_config_penalty_settings_round_trip(tmp_path):
    config = RunConfig(gradient_penalty="WGAN_GP", gradient_penalty_weight=5)
    assert config.gradient_penalty == "wgan-gp"
    assert RunConfig(gradient_penalty="none").gradient_penalty is None
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config.to_dict()))
    again = RunConfig.from_dict(run.read_settings(path))
    assert (again.gradient_penalty, again.gradient_penalty_weight) == ("wgan-gp", 5)
    for settings, message in (
        ({"gradient_penalty": "l2"}, "unknown `gradient_penalty` 'l2'"),
        ({"gradient_penalty_weight": -1.0}, "must be a positive number; received -1.0"),
        ({"gradient_penalty_weight": True}, "must be a positive number; received True"),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            RunConfig(**settings)


@pytest.mark.jax
def test_run_config_builds_the_penalised_gan():
    config = RunConfig(
        width=4, gradient_penalty="r1", gradient_penalty_weight=2.0, batch_norm=False
    )
    (phase,) = config.replace(warm_start_method=None).phases(batches_per_epoch=4)
    model = config.build_gan(num_examples=8, phase=phase)
    assert (model.gradient_penalty, model.gradient_penalty_weight) == ("r1", 2.0)


def test_config_file_sets_the_penalty_and_flags_override_it(data_dir, tmp_path):
    settings = tmp_path / "settings.json"
    settings.write_text(
        json.dumps({"gradient_penalty": "wgan-gp", "batch_norm": False})
    )
    out = tmp_path / "run"
    argv = ["train", *TINY, "--config", str(settings), "--steps", "1"]
    argv += ["--method", "adam", "--gradient-penalty-weight", "4"]
    argv += ["--batch-size", "64", "--data-dir", data_dir, "--out", str(out)]
    assert cli.main(argv) == 0
    recorded = json.loads((out / "run.json").read_text())
    assert (recorded["gradient_penalty"], recorded["gradient_penalty_weight"]) == (
        "wgan-gp",
        4.0,
    )
    model = keras.models.load_model(out / "model.keras")
    assert (model.gradient_penalty, model.gradient_penalty_weight) == ("wgan-gp", 4.0)


# ---------------------------------------------------------------------- #
# Alternating updates (n_dis).
# ---------------------------------------------------------------------- #
# Keras' Adam against the NumPy model's: see TRAINING above.
KERAS_ADAM = {"beta_1": 0.5, "beta_2": 0.875, "epsilon": 1e-14}
ALTERNATING = [
    ("sgda", 3, keras.optimizers.SGD, {}, {}),
    ("adam", 2, keras.optimizers.Adam, KERAS_ADAM, {"adaptive": "adam", **KERAS_ADAM}),
    ("ogda", 1, Optimistic, {}, {"method": "ogda"}),
    (
        "optimistic-adam",
        2,
        Optimistic,
        {"adaptive": "adam", "beta_1": 0.5},
        {"method": "ogda", "adaptive": "adam", "beta_1": 0.5},
    ),
]


@pytest.mark.jax
@pytest.mark.parametrize(
    "name, n_dis, optimizer, options, model",
    ALTERNATING,
    ids=[c[0] for c in ALTERNATING],
)
def test_alternating_game_matches_numpy_step_by_step(
    name, n_dis, optimizer, options, model
):
    """y (the last player) steps n_dis times, then x once at the updated y."""
    game = keras_svre.BilinearGame(dim=DIM, seed=3)
    field = ref.BilinearField(game.a.numpy(), game.b.numpy())
    x0, y0 = game.x.numpy(), game.y.numpy()
    game.compile(
        x_optimizer=optimizer(0.1, **options),
        y_optimizer=optimizer(0.3, **options),
        n_dis=n_dis,
    )
    k = n_dis + 1
    assert game.minibatches_per_iteration == game.evaluations_per_iteration == k
    minibatches = bilinear_minibatches(3 * k)
    for t in range(3):
        chunk = np.array(minibatches[t * k : (t + 1) * k])
        game.fit(slices(chunk), verbose=0)
        x, y = ref.run_alternating(
            field,
            x0,
            y0,
            minibatches[: (t + 1) * k],
            n_dis,
            f32(0.1),
            f32(0.3),
            **model,
        )
        np.testing.assert_allclose(game.x.numpy(), x, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(game.y.numpy(), y, rtol=1e-9, atol=1e-12)
        # Each player's optimizer counts its own steps.
        assert game.iterations == t + 1
        assert int(game.game_optimizers[1].iterations.numpy()) == n_dis * (t + 1)


@pytest.mark.jax
def test_alternating_gan_with_wgan_gp_matches_numpy():
    """The penalty is in each of the discriminator's steps; averages per iteration."""
    x = images()
    model = gan("wgan-gp")
    model.compile(
        generator_optimizer=keras.optimizers.Adam(0.05, **KERAS_ADAM),
        discriminator_optimizer=keras.optimizers.Adam(0.02, **KERAS_ADAM),
        n_dis=2,
    )
    rng = np.random.default_rng(5)
    order = [list(rng.choice(N, 4, replace=False)) for _ in range(3 * 3)]
    field = ref.LinearGANField(x, latent_bank(model), "wgan-gp", WEIGHT)
    theta, phi = ref.run_alternating(
        field,
        np.concatenate([np.ravel(v.numpy()) for v in model.generator.weights]),
        np.concatenate([np.ravel(v.numpy()) for v in model.discriminator.weights]),
        order,
        2,
        f32(0.05),
        f32(0.02),
        adaptive="adam",
        **KERAS_ADAM,
    )
    data = slices(np.array(order), x[np.array(order)])
    history = model.fit(data, verbose=0)
    assert all(np.isfinite(v[-1]) for v in history.history.values())
    actual = [np.ravel(v.numpy()) for v in model.discriminator.weights]
    np.testing.assert_allclose(np.concatenate(actual), phi, rtol=1e-9)
    actual = [np.ravel(v.numpy()) for v in model.generator.weights]
    np.testing.assert_allclose(np.concatenate(actual), theta, rtol=1e-9)
    assert model.iterations == 3 and int(model.average_count.numpy()) == 3


@pytest.mark.jax
def test_alternating_non_finite_step_is_not_applied():
    """A NaN in the first discriminator step: nothing of the iteration is applied."""
    model = gan(None)
    model.compile(generator_optimizer="sgd", discriminator_optimizer="sgd", n_dis=2)
    before = [v.numpy() for v in model.game_variables]
    x = np.full((N, PIXELS), np.nan)
    data = batches(np.arange(N), x, size=4)
    with pytest.raises(keras_svre.callbacks.NonFiniteLossError, match="iteration 1"):
        model.fit(data, verbose=0)
    assert [int(o.iterations.numpy()) for o in model.game_optimizers] == [0, 0]
    for a, b in zip(before, model.game_variables, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


@pytest.mark.jax
def test_alternating_under_mixed_float16_skips_overflows_then_trains():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        generator = keras.Sequential(
            [
                keras.Input((3,)),
                keras.layers.Dense(16, activation="tanh"),
                keras.layers.Reshape((4, 4, 1)),
            ]
        )
        discriminator = keras.Sequential(
            [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(1)]
        )
        model = keras_svre.GAN(generator, discriminator, num_examples=64, seed=0)

        def scaled():
            # 2**40 overflows float16 gradients: the iteration is skipped.
            return keras.optimizers.LossScaleOptimizer(
                keras.optimizers.SGD(0.05), initial_scale=2.0**40
            )

        model.compile(
            generator_optimizer=scaled(), discriminator_optimizer=scaled(), n_dis=2
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.dynamic_loss_scaling
    x = np.random.default_rng(0).uniform(-1, 1, (64, 4, 4, 1)).astype("float32")
    # 4 batches, 3 per iteration: one iteration a pass.
    data = batches(np.arange(64), x, size=16)
    before = [v.numpy() for v in model.game_variables]
    model.fit(data, verbose=0)
    assert [int(o.iterations.numpy()) for o in model.game_optimizers] == [0, 0]
    assert float(model.loss_scale.numpy()) == 2.0**39  # halved once
    for a, b in zip(before, model.game_variables, strict=True):
        np.testing.assert_array_equal(a, b.numpy())
    model.loss_scale.assign(2.0**8)
    model.fit(data, epochs=3, verbose=0)
    assert [int(o.iterations.numpy()) for o in model.game_optimizers] == [3, 6]
    assert int(model.loss_scale_good_steps.numpy()) == 3  # once per iteration
    after = [v.numpy() for v in model.game_variables]
    assert all(np.isfinite(w).all() for w in after)
    assert all(not np.array_equal(a, b) for a, b in zip(before, after))


ALTERNATING_REFUSALS = [
    (
        {"optimizer": "sgd", "n_dis": 0},
        "Argument `n_dis` must be None (simultaneous steps) or a positive integer. "
        "Received: n_dis=0.",
    ),
    (
        {"x_optimizer": "sgd", "y_optimizer": "sgd", "n_dis": True},
        "Received: n_dis=True.",
    ),
    (
        {
            "x_optimizer": keras_svre.Extragradient(),
            "y_optimizer": keras_svre.Extragradient(),
            "n_dis": 2,
        },
        "not with extragradient or SVRE, which step all players from one joint "
        "point. Received: n_dis=2 with an optimizer that extrapolates.",
    ),
    (
        {"optimizer": "sgd", "n_dis": 2},
        "step the 'y' player apart from the others, so each player needs its own "
        "optimizer (its own step count and moments): pass `x_optimizer=`, "
        "`y_optimizer=` instead of `optimizer=`. Received: n_dis=2.",
    ),
]


@pytest.mark.jax
@pytest.mark.parametrize(
    "arguments, message", ALTERNATING_REFUSALS, ids=["zero", "bool", "se", "shared"]
)
def test_alternating_refusals(arguments, message):
    game = keras_svre.BilinearGame(dim=DIM, seed=3)
    with pytest.raises(ValueError, match=re.escape(message)):
        game.compile(**arguments)


@pytest.mark.jax
def test_method_table_counts_alternating_iterations():
    assert methods.minibatches_per_iteration(False, n_dis=5) == 6
    assert methods.evaluations_per_iteration(False, False, n_dis=5) == 6
    assert methods.method("adam").evaluations_per_iteration(n_dis=2) == 3
    alternating = [name for name in methods.names() if methods.method(name).alternates]
    assert alternating == ["sgda", "adam", "ogda", "optimistic-adam"]


@pytest.mark.jax
def test_run_config_alternating(tmp_path):
    config = RunConfig(method="adam", n_dis=2, epochs=45)
    (phase,) = config.phases(batches_per_epoch=12)  # no warm start before adam
    assert (phase.per_pass, phase.iterations) == (4, 45 * 4)
    assert phase.report(None, 0.0)["minibatch_evaluations"] == 45 * 4 * 3
    arguments = config.compile_arguments(phase)
    assert arguments["n_dis"] == 2
    assert {"generator_optimizer", "discriminator_optimizer"} <= set(arguments)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config.to_dict()))
    assert RunConfig.from_dict(run.read_settings(path)).n_dis == 2
    for settings, message in (
        (
            {"method": "adam", "n_dis": 0},
            "`n_dis` must be a positive integer; received 0",
        ),
        (
            {"method": "svre", "n_dis": 2},
            "`n_dis` (alternating updates) needs methods that step one player at a "
            "time (sgda, adam, ogda, optimistic-adam); `method` svre extrapolates",
        ),
        (
            {"method": "adam", "warm_start_method": "se", "n_dis": 1},
            "`warm_start_method` se extrapolates",
        ),
    ):
        with pytest.raises(ConfigError, match=re.escape(message)):
            RunConfig(**settings)


def test_command_line_trains_alternating_adam_with_wgan_gp(data_dir, tmp_path):
    argv = ["train", *TINY, "--method", "adam", "--n-dis", "2", "--steps", "2"]
    argv += ["--gradient-penalty", "wgan-gp", "--no-batch-norm", "--batch-size", "64"]
    argv += ["--data-dir", data_dir, "--out", str(tmp_path)]
    assert cli.main(argv) == 0
    summary = json.loads((tmp_path / "metrics.json").read_text())
    # 4 batches an epoch, 3 per iteration: one iteration an epoch, 3 evaluations.
    assert (summary["iterations"], summary["minibatch_evaluations"]) == (2, 6)
    assert np.isfinite(summary["final_losses"]["discriminator_loss"])
    model = keras.models.load_model(tmp_path / "model.keras")
    assert model.n_dis == 2 and model.gradient_penalty == "wgan-gp"
    steps = [int(o.iterations.numpy()) for o in model.game_optimizers]
    assert steps == [2, 4]  # the generator's, the discriminator's
    assert json.loads((tmp_path / "run.json").read_text())["n_dis"] == 2


def test_command_line_refuses_n_dis_with_svre(capsys):
    fails_cleanly(
        capsys,
        ["train", *TINY, "--n-dis", "2"],
        "--n-dis (alternating updates) needs methods that step one player at a "
        "time (sgda, adam, ogda, optimistic-adam); --method svre extrapolates",
    )


def test_command_line_resume_mid_epoch_equals_an_uninterrupted_alternating_run(
    tmp_path, data_dir
):
    """The resumed run skips the batches the interrupted epoch used: n_dis + 1 each."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    # 6 batches an epoch, 2 per iteration: 3 iterations an epoch.
    common = ["train", "--take", "384", "--width", "2", "--batch-size", "64"]
    common += ["--method", "sgda", "--n-dis", "1", "--verbose", "0", "--no-evaluate"]
    common += ["--deterministic", "--data-dir", data_dir]
    _cli_in_a_process([*common, "--steps", "5", "--out", str(whole)])
    _cli_in_a_process([*common, "--steps", "2", "--out", str(parts)])
    resume = ["train", "--resume", "--steps", "5", "--verbose", "0", "--no-evaluate"]
    _cli_in_a_process([*resume, "--data-dir", data_dir, "--out", str(parts)])
    a = keras.models.load_model(whole / "model.keras")
    b = keras.models.load_model(parts / "model.keras")
    assert [int(o.iterations.numpy()) for o in b.game_optimizers] == [5, 5]
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def _cli_in_a_process(argv):
    """The CLI in a process of its own (`--deterministic` is process-wide)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "keras_svre", *argv]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
