"""The baselines: optimistic methods (OGDA, optimistic Adam).

`keras_svre.Optimistic` is checked as Keras checks its optimizers (a
serialisation round trip, steps by hand, a golden trajectory against NumPy)
and, in a `Game`, step by step against the NumPy model of the methods
(`tests/numpy_reference.py`).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_svre
from keras_svre import Optimistic
from keras_svre.optimizers import methods
from tests import numpy_reference as ref
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
        data = tf.data.Dataset.from_tensor_slices(np.array(minibatches[t : t + 1]))
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


def test_save_load_then_train_equals_uninterrupted(tmp_path):
    def data():
        return tf.data.Dataset.from_tensor_slices(np.array(bilinear_minibatches(6)))

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
