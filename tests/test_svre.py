"""Unit tests of `keras_svre.SVRE`, in the style of Keras' optimizer tests.

The optimizer is driven by hand, as a `keras_svre.Game` train step drives it:
`take_snapshot`, `variance_reduced_gradient`, `extrapolate`, then
`apply_direction`. The expected values are
written out with NumPy on float64 variables; Keras keeps the learning rate in
a float32 variable, hence `f32(lr)`.
"""

import re

import keras
import numpy as np
import pytest

import keras_svre
from keras_svre import SVRE
from tests.numpy_reference import numpy_step
from tests.optimizer_helpers import (
    apply_in_game_step,
    assert_close,
    assert_round_trip,
    f32,
    variable,
)

pytestmark = pytest.mark.jax

W0 = [1.0, -2.0, 3.0]
U0 = [[0.5, 1.5], [-1.0, 2.0]]


def built_svre(variables, **kwargs):
    kwargs.setdefault("learning_rate", 0.1)
    optimizer = SVRE(**kwargs)
    optimizer.build(variables)
    return optimizer


# ---------------------------------------------------------------------- #
# Configuration.
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("adaptive", ["adam", "vrad"])
def test_config(adaptive):
    optimizer = SVRE(
        learning_rate=0.5,
        restart_probability=0.25,
        average_restart_probability=0.1,
        adaptive=adaptive,
        beta_1=0.5,
        beta_2=0.67,
        epsilon=1e-6,
        clipnorm=2.0,
    )
    config = assert_round_trip(optimizer)
    assert config["learning_rate"] == f32(0.5)
    assert config["restart_probability"] == 0.25
    assert config["average_restart_probability"] == 0.1
    assert config["adaptive"] == adaptive
    assert (config["beta_1"], config["beta_2"], config["epsilon"]) == (0.5, 0.67, 1e-6)
    assert config["clipnorm"] == 2.0
    assert config["name"] == "svre"


def test_config_defaults():
    config = assert_round_trip(SVRE())
    assert config["learning_rate"] == f32(0.01)
    assert config["restart_probability"] is None
    assert config["average_restart_probability"] == 0.0
    assert config["adaptive"] is None
    assert (config["beta_1"], config["beta_2"], config["epsilon"]) == (
        0.9,
        0.999,
        1e-8,
    )


# ---------------------------------------------------------------------- #
# Single steps.
# ---------------------------------------------------------------------- #
def test_variance_reduced_gradient():
    w, u = variable(W0), variable(U0)
    optimizer = built_svre([w, u])
    mu = [np.array([0.25, -0.5, 1.0]), np.array([[1.0, 2.0], [3.0, 4.0]])]
    optimizer.take_snapshot([w, u], mu)

    g = [np.array([1.0, 2.0, 3.0]), np.array([[0.5, 0.5], [0.5, 0.5]])]
    g_s = [np.array([-1.0, 0.5, 2.0]), np.array([[1.5, -0.5], [0.0, 2.5]])]
    d_w, d_u = optimizer.variance_reduced_gradient(g, g_s, [w, u])

    assert_close(d_w, g[0] - g_s[0] + mu[0])
    assert_close(d_w, [2.25, 1.0, 2.0])
    assert_close(d_u, g[1] - g_s[1] + mu[1])
    assert_close(optimizer._mean_gradients[0], mu[0])
    assert_close(optimizer._mean_gradients[1], mu[1])
    # At the snapshot itself (g == g_s) the estimate is exactly mu.
    d_w, _ = optimizer.variance_reduced_gradient(g, g, [w, u])
    assert_close(d_w, mu[0])


def test_snapshot_slot():
    w, u = variable(W0), variable(U0)
    optimizer = built_svre([w, u])
    assert int(optimizer.snapshots_taken.numpy()) == 0

    mu = [np.array([1.0, -2.0, 3.0]), np.full((2, 2), 0.5)]
    optimizer.take_snapshot([w, u], mu)
    assert int(optimizer.snapshots_taken.numpy()) == 1
    assert_close(optimizer._snapshots[0], W0)
    assert_close(optimizer._snapshots[1], U0)
    assert_close(optimizer._mean_gradients[0], mu[0])
    assert_close(optimizer._mean_gradients[1], mu[1])

    # The snapshot stays put while the iterate moves.
    apply_in_game_step(optimizer, [np.ones(3), np.ones((2, 2))], [w, u])
    w1, u1 = w.numpy().copy(), u.numpy().copy()
    assert not np.allclose(w1, W0)
    snapshot_w, snapshot_u = optimizer.snapshot_values([w, u])
    assert_close(snapshot_w, W0)
    assert_close(snapshot_u, U0)

    optimizer.take_snapshot([w, u], [-mu[0], -mu[1]])
    assert int(optimizer.snapshots_taken.numpy()) == 2
    assert_close(optimizer._snapshots[0], w1)
    assert_close(optimizer._snapshots[1], u1)
    assert_close(optimizer._mean_gradients[0], -mu[0])


@pytest.mark.parametrize("adaptive", [None, "adam", "vrad"])
def test_extrapolate_single_step(adaptive):
    lr = f32(0.1)
    w = variable(W0)
    optimizer = built_svre(
        [w], adaptive=adaptive, beta_1=0.5, beta_2=0.75, average_restart_probability=1
    )
    optimizer.take_snapshot([w], [np.array([1.0, 1.0, 1.0])])
    optimizer.reset_average([w])
    before = [v.numpy().copy() for v in optimizer.variables]

    d = optimizer.variance_reduced_gradient(
        [np.array([0.5, 4.0, -1.5])], [np.array([1.0, 2.0, 3.0])], [w]
    )
    (half,) = optimizer.extrapolate(d, [w])

    expected_d = np.array([0.5, 3.0, -3.5])
    step, _, _ = numpy_step(adaptive, expected_d, 0.0, 0.0, 1, 0.5, 0.75)
    assert_close(half, np.array(W0) - lr * step)
    for slot, value in zip(optimizer.variables, before, strict=True):
        np.testing.assert_array_equal(slot.numpy(), value)


@pytest.mark.parametrize("adaptive", [None, "adam", "vrad"])
def test_single_step(adaptive):
    lr = f32(0.1)
    w = variable(W0)
    optimizer = built_svre([w], adaptive=adaptive, beta_1=0.5, beta_2=0.75)
    d = np.array([0.5, 4.0, -1.5])

    apply_in_game_step(optimizer, [d], [w])

    step, m, v = numpy_step(adaptive, d, np.zeros(3), np.zeros(3), 1, 0.5, 0.75)
    assert_close(w, np.array(W0) - lr * step)
    assert int(optimizer.iterations.numpy()) == 1
    if adaptive:
        assert_close(optimizer._momentums[0], m)
        assert_close(optimizer._velocities[0], v)
    if adaptive is None:
        assert_close(w, [1.0 - lr * 0.5, -2.0 - lr * 4.0, 3.0 + lr * 1.5])


def test_one_plain_iteration_by_hand():
    """Snapshot, mean field, extrapolation and update, with small numbers."""
    w = variable([1.0, 2.0])
    optimizer = built_svre([w], learning_rate=0.5)
    optimizer.take_snapshot([w], [np.array([1.0, -1.0])])

    # F_i(w) = w + c_i with c_i = [0, 1]; F_j(w) = 2 w.
    c_i = np.array([0.0, 1.0])
    d = optimizer.variance_reduced_gradient([w.numpy() + c_i], [w.numpy() + c_i], [w])
    assert_close(d[0], [1.0, -1.0])  # At the snapshot: mu.
    (half,) = optimizer.extrapolate(d, [w])
    assert_close(half, [0.5, 2.5])
    snapshot = keras.ops.convert_to_numpy(optimizer.snapshot_values([w])[0])
    d = optimizer.variance_reduced_gradient(
        [2 * keras.ops.convert_to_numpy(half)], [2 * snapshot], [w]
    )
    assert_close(d[0], [0.0, 0.0])  # [1, 5] - [2, 4] + [1, -1]
    apply_in_game_step(optimizer, d, [w])
    assert_close(w, [1.0, 2.0])


def test_uniform_average_of_the_iterates():
    lr = f32(0.1)
    w, u = variable(W0), variable(U0)
    optimizer = built_svre([w, u], average_restart_probability=0.5)
    assert optimizer.keeps_average

    optimizer.reset_average([w, u])
    assert int(keras.ops.convert_to_numpy(optimizer.average_size)) == 1
    iterates_w, iterates_u = [np.array(W0)], [np.array(U0)]
    rng = np.random.default_rng(0)
    for k in range(1, 4):
        g_w, g_u = rng.normal(size=3), rng.normal(size=(2, 2))
        apply_in_game_step(optimizer, [g_w, g_u], [w, u])
        iterates_w.append(iterates_w[-1] - lr * g_w)
        iterates_u.append(iterates_u[-1] - lr * g_u)
        assert_close(w, iterates_w[-1])
        average_w, average_u = optimizer.average_values([w, u])
        assert_close(average_w, np.mean(iterates_w, axis=0))
        assert_close(average_u, np.mean(iterates_u, axis=0))
        assert int(keras.ops.convert_to_numpy(optimizer.average_size)) == k + 1

    average_w = np.mean(iterates_w, axis=0)
    average_u = np.mean(iterates_u, axis=0)
    optimizer.restart_from_average([w, u])
    assert_close(w, average_w)
    assert_close(u, average_u)
    assert int(keras.ops.convert_to_numpy(optimizer.average_size)) == 1

    # The average restarts at the restarted iterate.
    g_w, g_u = np.ones(3), np.ones((2, 2))
    apply_in_game_step(optimizer, [g_w, g_u], [w, u])
    assert_close(optimizer._averages[0], average_w - lr * g_w / 2)
    assert_close(optimizer._averages[1], average_u - lr * g_u / 2)


def test_reset_average_restarts_at_the_current_iterate():
    w = variable(W0)
    optimizer = built_svre([w], average_restart_probability=1.0)
    optimizer.reset_average([w])
    apply_in_game_step(optimizer, [np.ones(3)], [w])
    optimizer.reset_average([w])
    assert_close(optimizer._averages[0], w.numpy())
    assert int(keras.ops.convert_to_numpy(optimizer.average_size)) == 1


def test_no_average_without_average_restarts():
    w = variable(W0)
    optimizer = built_svre([w])
    assert not optimizer.keeps_average
    assert not any("average" in v.name for v in optimizer.variables)
    with pytest.raises(
        ValueError,
        match=re.escape("construct it with `average_restart_probability > 0`."),
    ):
        optimizer.average_values([w])


def test_correctness_with_golden():
    """Five SVRE-Adam iterations on a two-player linear game vs. NumPy Adam.

    Player x minimises x.A_i y + a_i.x, player y maximises it; n = 4
    components, minibatches i (extrapolation) and j (update), and a new
    snapshot (with its full mean field) after the third iteration.
    """
    rng = np.random.default_rng(42)
    n = 4
    a_mat = rng.normal(size=(n, 2, 3))
    a_vec, b_vec = rng.normal(size=(n, 2)), rng.normal(size=(n, 3))

    def field(i, x, y):
        return a_mat[i] @ y + a_vec[i], -(a_mat[i].T @ x + b_vec[i])

    def mean_field(x, y):
        fields = [field(i, x, y) for i in range(n)]
        return [np.mean([f[p] for f in fields], axis=0) for p in (0, 1)]

    lr, beta_1, beta_2 = f32(0.05), 0.5, 0.9
    x0, y0 = rng.normal(size=2), rng.normal(size=3)
    order = [(0, 1), (2, 3), (1, 1), (3, 0), (2, 2)]
    snapshot_after = {0, 3}

    # Independent NumPy model (Adam of Kingma & Ba on the variance-reduced
    # field; the look-ahead reads the moments, the update commits them).
    w = [x0.copy(), y0.copy()]
    m, v = [np.zeros(2), np.zeros(3)], [np.zeros(2), np.zeros(3)]
    snapshot, mu = None, None
    golden = []
    for t, (i, j) in enumerate(order, start=1):
        if t - 1 in snapshot_after:
            snapshot, mu = [p.copy() for p in w], mean_field(*w)
        g, g_s = field(i, *w), field(i, *snapshot)
        half = []
        for p in (0, 1):
            d = g[p] - g_s[p] + mu[p]
            step, _, _ = numpy_step("adam", d, m[p], v[p], t, beta_1, beta_2)
            half.append(w[p] - lr * step)
        g, g_s = field(j, *half), field(j, *snapshot)
        for p in (0, 1):
            d = g[p] - g_s[p] + mu[p]
            step, m[p], v[p] = numpy_step("adam", d, m[p], v[p], t, beta_1, beta_2)
            w[p] = w[p] - lr * step
        golden.append([p.copy() for p in w])

    x, y = variable(x0), variable(y0)
    players = [x, y]
    optimizer = built_svre(
        players, learning_rate=0.05, adaptive="adam", beta_1=beta_1, beta_2=beta_2
    )

    def numpy_values(values):
        return [keras.ops.convert_to_numpy(p) for p in values]

    for t, ((i, j), expected) in enumerate(zip(order, golden, strict=True)):
        if t in snapshot_after:
            optimizer.take_snapshot(players, mean_field(x.numpy(), y.numpy()))
        snapshot = numpy_values(optimizer.snapshot_values(players))
        current = numpy_values(players)
        d = optimizer.variance_reduced_gradient(
            field(i, *current), field(i, *snapshot), players
        )
        half = numpy_values(optimizer.extrapolate(d, players))
        d = optimizer.variance_reduced_gradient(
            field(j, *half), field(j, *snapshot), players
        )
        apply_in_game_step(optimizer, d, players)
        assert_close(x, expected[0])
        assert_close(y, expected[1])
    assert_close(optimizer._momentums[0], m[0])
    assert_close(optimizer._velocities[1], v[1])
    assert int(optimizer.iterations.numpy()) == len(order)
    assert int(optimizer.snapshots_taken.numpy()) == len(snapshot_after)


# ---------------------------------------------------------------------- #
# Learning-rate schedules and clipping.
# ---------------------------------------------------------------------- #
def test_learning_rate_schedule_is_honoured():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5)
    w = variable(W0)
    optimizer = SVRE(schedule)
    optimizer.build([w])
    optimizer.take_snapshot([w], [np.zeros(3)])
    d = np.array([0.5, 4.0, -1.5])
    expected = np.array(W0)
    for step in range(3):
        # The rate as the schedule gives it (float32 on TensorFlow).
        lr = float(keras.ops.convert_to_numpy(schedule(step)))
        (half,) = optimizer.extrapolate([d], [w])
        assert_close(half, expected - lr * d)
        apply_in_game_step(optimizer, [d], [w])
        expected = expected - lr * d
        assert_close(w, expected)


def test_clipnorm_clips_extrapolation_and_update():
    lr = f32(0.1)
    w = variable([1.0, 1.0])
    optimizer = built_svre([w], clipnorm=1.0)
    optimizer.take_snapshot([w], [np.array([30.0, -40.0])])
    zero = [np.zeros(2)]
    d = optimizer.variance_reduced_gradient(zero, zero, [w])  # mu, norm 50
    (half,) = optimizer.extrapolate(d, [w])
    assert_close(half, [1.0 - lr * 0.6, 1.0 + lr * 0.8])
    apply_in_game_step(optimizer, d, [w])
    assert_close(w, [1.0 - lr * 0.6, 1.0 + lr * 0.8])


# ---------------------------------------------------------------------- #
# Slots, and their survival through a `.keras` file.
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("adaptive", [None, "adam"])
def test_slots_are_optimizer_variables(adaptive):
    w, u = variable(W0), variable(U0)
    optimizer = built_svre([w, u], adaptive=adaptive, average_restart_probability=0.1)
    names = [v.name for v in optimizer.variables]
    expected = ["snapshot", "mean_gradient", "average"]
    if adaptive:
        expected += ["momentum", "velocity"]
    for kind in expected:
        assert sum(name.endswith(f"_{kind}") for name in names) == 2, (kind, names)
    for slots in (optimizer._snapshots, optimizer._mean_gradients):
        for slot, var in zip(slots, (w, u), strict=True):
            assert any(slot is v for v in optimizer.variables)
            assert slot.shape == var.shape and slot.dtype == "float64"
            assert not slot.trainable
    assert "snapshots_taken" in names
    assert "average_start" in names


def test_slots_survive_keras_save_and_load(tmp_path):
    game = keras_svre.BilinearGame(dim=4, seed=0)
    game.compile(
        optimizer=SVRE(
            0.1,
            restart_probability=0.5,
            average_restart_probability=0.5,
            adaptive="adam",
        )
    )
    (optimizer,) = game.game_optimizers
    players = [game.x, game.y]
    # Give every slot a distinct non-zero value, as a game step would.
    rng = np.random.default_rng(0)
    optimizer.take_snapshot(players, [rng.normal(size=4), rng.normal(size=4)])
    optimizer.reset_average(players)
    for _ in range(2):
        apply_in_game_step(optimizer, [rng.normal(size=4), rng.normal(size=4)], players)
    optimizer.take_snapshot(players, [rng.normal(size=4), rng.normal(size=4)])

    path = tmp_path / "game.keras"
    game.save(path)
    loaded = keras.saving.load_model(path)

    (restored,) = loaded.game_optimizers
    assert type(restored) is SVRE
    assert restored.get_config() == optimizer.get_config()
    # The loaded game keeps its name, so the slots keep their paths.
    assert loaded.name == game.name
    assert [v.path for v in restored.variables] == [v.path for v in optimizer.variables]
    for saved, back in zip(optimizer.variables, restored.variables, strict=True):
        np.testing.assert_array_equal(back.numpy(), saved.numpy(), err_msg=saved.path)
    assert int(restored.iterations.numpy()) == 2
    assert int(restored.snapshots_taken.numpy()) == 2
    assert int(keras.ops.convert_to_numpy(restored.average_size)) == 3
    assert_close(restored._snapshots[0], game.x.numpy())
    assert_close(loaded.x, game.x.numpy())


# ---------------------------------------------------------------------- #
# Invalid arguments and misuse.
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("value", [0.0, 1.5, -0.5])
def test_invalid_restart_probability(value):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Argument `restart_probability` must be in the (0, 1] range. "
            f"Received: restart_probability={value}."
        ),
    ):
        SVRE(restart_probability=value)


def test_restart_probability_bounds_are_valid():
    assert SVRE(restart_probability=1.0).restart_probability == 1.0
    assert SVRE(average_restart_probability=0.0).average_restart_probability == 0.0
    assert SVRE(average_restart_probability=1.0).average_restart_probability == 1.0


@pytest.mark.parametrize("value", [-0.1, 2])
def test_invalid_average_restart_probability(value):
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Argument `average_restart_probability` must be in the [0, 1] range. "
            f"Received: average_restart_probability={value}."
        ),
    ):
        SVRE(average_restart_probability=value)


def test_plain_fit_raises():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=SVRE(0.1), loss="mse")
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    with pytest.raises(TypeError) as info:
        model.fit(x, y, epochs=1, verbose=0)
    message = str(info.value)
    assert "`SVRE` is a game optimizer" in message
    assert "and at a snapshot" in message
    assert "`keras_svre.Game`" in message
    assert "`keras_svre.GAN`" in message
    assert "`keras.optimizers.SGD`" in message


def test_average_with_gradient_accumulation_counts_real_steps_only():
    w = keras.Variable(np.array([0.0]))
    optimizer = SVRE(
        1.0, average_restart_probability=0.5, gradient_accumulation_steps=2
    )
    optimizer.build([w])
    optimizer.reset_average([w])
    for _ in range(2):
        optimizer.apply_direction([np.array([1.0])], [w])
    # One real step: iterates 0 and -1.
    assert_close(optimizer._averages[0], np.array([-0.5]))
    assert int(keras.ops.convert_to_numpy(optimizer.average_size)) == 2
