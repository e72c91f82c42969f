"""Unit tests of `keras_svre.Extragradient` (SE, SE-A) and `optimizers.get`.

In the style of Keras' own optimizer tests (lion_test.py, adam_test.py): a
serialisation round trip, hand-computed single steps, a golden trajectory,
one test per invalid argument. Variables are float64 so the expected values
can be checked tightly; Keras keeps the learning rate in a float32 variable,
hence `f32(lr)` in the expected values.
"""

import copy
import re

import keras
import numpy as np
import pytest

import keras_svre
from keras_svre import SVRE, Extragradient, Optimistic
from tests.numpy_reference import numpy_step
from tests.optimizer_helpers import (
    apply_in_game_step,
    assert_close,
    assert_round_trip,
    f32,
    variable,
)

pytestmark = pytest.mark.jax


# ---------------------------------------------------------------------- #
# Configuration.
# ---------------------------------------------------------------------- #
def test_config():
    optimizer = Extragradient(
        learning_rate=0.5,
        adaptive="vrad",
        beta_1=0.5,
        beta_2=0.67,
        epsilon=1e-6,
        clipnorm=2.0,
    )
    config = assert_round_trip(optimizer)
    assert config["learning_rate"] == f32(0.5)
    assert config["adaptive"] == "vrad"
    assert (config["beta_1"], config["beta_2"], config["epsilon"]) == (0.5, 0.67, 1e-6)
    assert config["clipnorm"] == 2.0
    assert config["name"] == "extragradient"

    plain = assert_round_trip(Extragradient())
    assert plain["adaptive"] is None
    assert plain["learning_rate"] == f32(0.01)


def test_config_with_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    config = assert_round_trip(Extragradient(schedule, adaptive="adam"))
    restored = Extragradient.from_config(copy.deepcopy(config))
    assert isinstance(
        restored._learning_rate, keras.optimizers.schedules.ExponentialDecay
    )
    assert restored._learning_rate.get_config() == schedule.get_config()


# (method, class, adaptive) as documented in `keras_svre.optimizers`.
EXPECTED_METHODS = {
    "sgda": (keras.optimizers.SGD, None),
    "adam": (keras.optimizers.Adam, None),
    "ogda": (Optimistic, None),
    "optimistic-adam": (Optimistic, "adam"),
    "se": (Extragradient, None),
    "se-a": (Extragradient, "adam"),
    "svre": (SVRE, None),
    "svre-vrad": (SVRE, "adam"),
    "svre-opt": (SVRE, None),
    "svre-vrad-opt": (SVRE, "adam"),
}


def test_get_knows_every_method():
    assert set(EXPECTED_METHODS) == set(keras_svre.optimizers.METHODS)


@pytest.mark.parametrize("method", keras_svre.optimizers.METHODS)
def test_get(method):
    cls, adaptive = EXPECTED_METHODS[method]
    optimizer = keras_svre.optimizers.get(method, 0.25)
    assert type(optimizer) is cls
    assert float(optimizer.learning_rate.numpy()) == f32(0.25)
    if issubclass(cls, keras_svre.optimizers.GameOptimizer):
        assert optimizer.adaptive == adaptive
    # Case and `_` are forgiven; further arguments reach the constructor.
    extra = {"momentum": 0.5} if cls is keras.optimizers.SGD else {"beta_1": 0.5}
    spelled = keras_svre.optimizers.get(method.upper().replace("-", "_"), **extra)
    assert type(spelled) is cls
    for key, value in extra.items():
        assert getattr(spelled, key) == value
    # `None` keeps the class's default step size.
    default = float(cls().learning_rate.numpy())
    assert float(keras_svre.optimizers.get(method).learning_rate.numpy()) == default


def test_get_passes_svre_arguments():
    optimizer = keras_svre.optimizers.get(
        "svre",
        0.1,
        adaptive="vrad",
        restart_probability=0.2,
        average_restart_probability=0.1,
        clipnorm=1.0,
    )
    assert optimizer.adaptive == "vrad"
    assert optimizer.restart_probability == 0.2
    assert optimizer.average_restart_probability == 0.1
    assert optimizer.clipnorm == 1.0
    assert keras_svre.optimizers.get("se", adaptive="vrad").adaptive == "vrad"


def test_get_unknown_method():
    names = ", ".join(keras_svre.optimizers.METHODS)
    with pytest.raises(
        ValueError,
        match=re.escape(f"Unknown method 'rmsprop'. Choose one of: {names}."),
    ):
        keras_svre.optimizers.get("rmsprop")


# ---------------------------------------------------------------------- #
# Single steps.
# ---------------------------------------------------------------------- #
W0 = [1.0, -2.0, 3.0]
D = [0.5, 4.0, -1.5]


@pytest.mark.parametrize("adaptive", [None, "adam", "vrad"])
def test_extrapolate_single_step(adaptive):
    lr = f32(0.1)
    w = variable(W0)
    optimizer = Extragradient(0.1, adaptive=adaptive, beta_1=0.5, beta_2=0.75)
    optimizer.build([w])
    before = [v.numpy().copy() for v in optimizer.variables]

    (half,) = optimizer.extrapolate([np.array(D)], [w])

    step, _, _ = numpy_step(
        adaptive, np.array(D), np.zeros(3), np.zeros(3), 1, 0.5, 0.75
    )
    assert_close(half, np.array(W0) - lr * step)
    # Nothing changes: no variable, no slot, no iteration count.
    assert_close(w, W0)
    for slot, value in zip(optimizer.variables, before, strict=True):
        np.testing.assert_array_equal(slot.numpy(), value)
    assert int(optimizer.iterations.numpy()) == 0


def test_extrapolate_from_given_points():
    lr = f32(0.2)
    w, u = variable(W0), variable([[1.0, 2.0], [3.0, 4.0]])
    optimizer = Extragradient(0.2)
    optimizer.build([w, u])
    points = [np.array([0.0, 1.0, 2.0]), np.array([[5.0, 6.0], [7.0, 8.0]])]
    directions = [np.array(D), np.array([[1.0, -1.0], [2.0, -2.0]])]
    half_w, half_u = optimizer.extrapolate(directions, [w, u], points=points)
    assert_close(half_w, points[0] - lr * directions[0])
    assert_close(half_u, points[1] - lr * directions[1])
    assert_close(w, W0)


def test_extrapolate_rejects_unknown_variables():
    optimizer = Extragradient(0.1)
    optimizer.build([variable(W0)])
    with pytest.raises(ValueError):
        optimizer.extrapolate([np.array(D)], [variable(W0)])


@pytest.mark.parametrize("adaptive", [None, "adam", "vrad"])
def test_single_step(adaptive):
    lr = f32(0.1)
    w = variable(W0)
    optimizer = Extragradient(0.1, adaptive=adaptive, beta_1=0.5, beta_2=0.75)
    optimizer.build([w])

    apply_in_game_step(optimizer, [D], [w])

    d = np.array(D)
    step, m, v = numpy_step(adaptive, d, np.zeros(3), np.zeros(3), 1, 0.5, 0.75)
    assert_close(w, np.array(W0) - lr * step)
    assert int(optimizer.iterations.numpy()) == 1
    if adaptive:
        assert_close(optimizer._momentums[0], m)
        assert_close(optimizer._velocities[0], v)
        # Hand-computed: m = 0.5 d, v = 0.25 d^2, bias-corrected to d and d^2.
        assert_close(m, 0.5 * d)
        assert_close(v, 0.25 * d * d)
        ratio = 1.0 / (np.abs(d) + 1e-8)
        expected = d * ratio if adaptive == "adam" else d * np.abs(d) * ratio
        assert_close(w, np.array(W0) - lr * expected)


def test_plain_single_step_by_hand():
    w = variable([1.0, 2.0])
    optimizer = Extragradient(0.5)
    optimizer.build([w])
    (half,) = optimizer.extrapolate([np.array([1.0, -4.0])], [w])
    assert_close(half, [0.5, 4.0])
    apply_in_game_step(optimizer, [[2.0, 2.0]], [w])
    assert_close(w, [0.0, 1.0])


@pytest.mark.parametrize("adaptive", ["adam", "vrad"])
def test_extrapolation_sees_the_committed_moments(adaptive):
    """After an update, the look-ahead uses the stored moments and count 2."""
    lr = f32(0.1)
    w = variable(W0)
    optimizer = Extragradient(0.1, adaptive=adaptive)
    optimizer.build([w])
    g1, g2 = np.array(D), np.array([-1.0, 0.25, 2.0])

    apply_in_game_step(optimizer, [g1], [w])
    (half,) = optimizer.extrapolate([g2], [w])

    step1, m, v = numpy_step(adaptive, g1, np.zeros(3), np.zeros(3), 1)
    w1 = np.array(W0) - lr * step1
    step2, _, _ = numpy_step(adaptive, g2, m, v, 2)
    assert_close(w, w1)
    assert_close(half, w1 - lr * step2)
    assert_close(optimizer._momentums[0], m)
    assert_close(optimizer._velocities[0], v)


def test_correctness_with_golden():
    """Five SE-A iterations on a linear game field against a NumPy model."""
    rng = np.random.default_rng(0)
    n, dim = 4, 3
    a = rng.normal(size=(n, dim, dim))
    c = rng.normal(size=(n, dim))

    def field(i, point):
        return a[i] @ point + c[i]

    lr = f32(0.05)
    w = variable(rng.normal(size=dim))
    optimizer = Extragradient(0.05, adaptive="adam", beta_1=0.5)
    optimizer.build([w])

    # The NumPy model: the extrapolation reads the moments, the update commits them.
    ref_w, m, v = w.numpy().copy(), np.zeros(dim), np.zeros(dim)
    golden = []
    order = [(0, 1), (2, 3), (1, 1), (3, 0), (2, 2)]
    for t, (i, j) in enumerate(order, start=1):
        step, _, _ = numpy_step("adam", field(i, ref_w), m, v, t, beta_1=0.5)
        half = ref_w - lr * step
        step, m, v = numpy_step("adam", field(j, half), m, v, t, beta_1=0.5)
        ref_w = ref_w - lr * step
        golden.append(ref_w)

    for (i, j), expected in zip(order, golden, strict=True):
        (half,) = optimizer.extrapolate([field(i, w.numpy())], [w])
        apply_in_game_step(optimizer, [field(j, keras.ops.convert_to_numpy(half))], [w])
        assert_close(w, expected)
    assert int(optimizer.iterations.numpy()) == len(order)


# ---------------------------------------------------------------------- #
# Learning-rate schedules and clipping.
# ---------------------------------------------------------------------- #
def test_learning_rate_schedule_is_honoured():
    # decay_rate 0.5 keeps the float32 schedule exact: 0.1, 0.05, 0.025, ...
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5)
    w = variable(W0)
    d = np.array(D)
    optimizer = Extragradient(schedule)
    optimizer.build([w])
    expected_w = np.array(W0)
    for step in range(3):
        # The rate as the schedule gives it (float32 on TensorFlow).
        lr = float(keras.ops.convert_to_numpy(schedule(step)))
        (half,) = optimizer.extrapolate([d], [w])
        assert_close(half, expected_w - lr * d)
        apply_in_game_step(optimizer, [d], [w])
        expected_w = expected_w - lr * d
        assert_close(w, expected_w)


def test_callable_learning_rate_is_honoured():
    rate = {"value": 0.5}
    w = variable(W0)
    optimizer = Extragradient(lambda: rate["value"])
    optimizer.build([w])
    (half,) = optimizer.extrapolate([np.array(D)], [w])
    assert_close(half, np.array(W0) - 0.5 * np.array(D))
    rate["value"] = 0.25
    (half,) = optimizer.extrapolate([np.array(D)], [w])
    assert_close(half, np.array(W0) - 0.25 * np.array(D))


def test_clipnorm_clips_extrapolation_and_update():
    lr = f32(0.1)
    w = variable([1.0, 1.0])
    optimizer = Extragradient(0.1, clipnorm=1.0)
    optimizer.build([w])
    d = np.array([30.0, -40.0])  # norm 50, clipped to [0.6, -0.8]
    (half,) = optimizer.extrapolate([d], [w])
    assert_close(half, [1.0 - lr * 0.6, 1.0 + lr * 0.8])
    apply_in_game_step(optimizer, [d], [w])
    assert_close(w, [1.0 - lr * 0.6, 1.0 + lr * 0.8])


def test_clipvalue_and_global_clipnorm_clip_the_extrapolation():
    lr = f32(0.1)
    w, u = variable([0.0, 0.0]), variable([0.0])
    by_value = Extragradient(0.1, clipvalue=1.0)
    by_value.build([w])
    (half,) = by_value.extrapolate([np.array([3.0, -0.5])], [w])
    assert_close(half, [-lr * 1.0, lr * 0.5])

    by_global_norm = Extragradient(0.1, global_clipnorm=1.0)
    by_global_norm.build([w, u])
    # Global norm sqrt(9 + 16 + 144) = 13.
    half_w, half_u = by_global_norm.extrapolate(
        [np.array([3.0, 4.0]), np.array([12.0])], [w, u]
    )
    assert_close(half_w, [-lr * 3.0 / 13.0, -lr * 4.0 / 13.0])
    assert_close(half_u, [-lr * 12.0 / 13.0])


def test_loss_scale_factor_unscales_the_extrapolation():
    lr = f32(0.1)
    w = variable([0.0, 0.0])
    optimizer = Extragradient(0.1, loss_scale_factor=4.0)
    optimizer.build([w])
    (half,) = optimizer.extrapolate([np.array([4.0, -8.0])], [w])
    assert_close(half, [-lr * 1.0, lr * 2.0])
    apply_in_game_step(optimizer, [[4.0, -8.0]], [w])
    assert_close(w, [-lr * 1.0, lr * 2.0])


# ---------------------------------------------------------------------- #
# Slots.
# ---------------------------------------------------------------------- #
def test_slots():
    w = variable(W0)
    plain = Extragradient(0.1)
    plain.build([w])
    assert [v.name for v in plain.variables] == ["iteration", "learning_rate"]

    adaptive = Extragradient(0.1, adaptive="adam")
    adaptive.build([w])
    names = [v.name for v in adaptive.variables]
    assert any("momentum" in name for name in names)
    assert any("velocity" in name for name in names)
    assert any(slot is adaptive._momentums[0] for slot in adaptive.variables)
    assert adaptive._momentums[0].dtype == "float64"


# ---------------------------------------------------------------------- #
# Invalid arguments and misuse.
# ---------------------------------------------------------------------- #
def test_apply_outside_a_game_step():
    w = variable(W0)
    optimizer = Extragradient(0.1)
    optimizer.build([w])
    with pytest.raises(TypeError, match="keras_svre.Game"):
        optimizer.apply([np.array(D)], [w])
    assert_close(w, W0)
    assert int(optimizer.iterations.numpy()) == 0
    # `apply_direction` lets the update through only while it runs, also
    # when it fails (here on a direction of the wrong shape).
    with pytest.raises(Exception, match="shape"):
        optimizer.apply_direction([np.ones(5)], [w])
    with pytest.raises(TypeError):
        optimizer.apply_gradients([(np.array(D), w)])


def test_plain_fit_raises():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=Extragradient(0.1), loss="mse")
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    with pytest.raises(TypeError) as info:
        model.fit(x, y, epochs=1, verbose=0)
    message = str(info.value)
    assert "`Extragradient` is a game optimizer" in message
    assert "`keras_svre.Game`" in message
    assert "`keras_svre.GAN`" in message
    assert "`keras.optimizers.SGD`" in message
    assert "snapshot" not in message
