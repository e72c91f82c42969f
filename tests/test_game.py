"""The Game train step against the NumPy model of the methods, step by step."""

import keras
import numpy as np
import pytest

import keras_svre
from tests import numpy_reference as ref
from tests.backend_helpers import components, minibatches, numpy

pytestmark = pytest.mark.jax

DIM = 6
SEED = 3


def make_game():
    return keras_svre.BilinearGame(dim=DIM, seed=SEED)


def minibatch_order(iterations, k, batch_size=2, seed=7):
    rng = np.random.default_rng(seed)
    return [
        list(rng.choice(DIM, batch_size, replace=False)) for _ in range(iterations * k)
    ]


def minibatches_of(batches):
    return minibatches(np.array(batches, np.int64))


def train(game, optimizer, batches, **compile_kwargs):
    game.compile(optimizer=optimizer, **compile_kwargs)
    data = minibatches_of(batches)
    snapshot = components(DIM, 4)
    kwargs = (
        {"snapshot_data": snapshot} if isinstance(optimizer, keras_svre.SVRE) else {}
    )
    game.fit(data, epochs=1, verbose=0, **kwargs)
    return game


def reference(game, batches, method, lr, **kwargs):
    field = ref.BilinearField(game.a.numpy(), game.b.numpy())
    return ref.run(field, game.x.numpy(), game.y.numpy(), batches, method, lr, **kwargs)


CASES = [
    # (id, method, optimizer factory, reference kwargs, compile kwargs)
    ("sgda", "sgda", lambda: keras.optimizers.SGD(0.2), {}, {}),
    ("ogda", "ogda", lambda: keras_svre.Optimistic(0.1), {}, {}),
    (
        "optimistic_adam",
        "ogda",
        lambda: keras_svre.Optimistic(0.05, adaptive="adam", beta_1=0.5),
        {"adaptive": "adam", "beta_1": 0.5},
        {},
    ),
    ("se", "se", lambda: keras_svre.Extragradient(0.2), {}, {}),
    (
        "se_adam",
        "se",
        lambda: keras_svre.Extragradient(0.05, adaptive="adam", beta_1=0.5),
        {"adaptive": "adam", "beta_1": 0.5},
        {},
    ),
    (
        "svre",
        "svre",
        lambda: keras_svre.SVRE(0.2, restart_probability=0.2),
        {"restart_probability": 0.2},
        {},
    ),
    (
        "svre_restart_average",
        "svre",
        lambda: keras_svre.SVRE(
            0.2, restart_probability=0.3, average_restart_probability=0.5
        ),
        {"restart_probability": 0.3, "average_restart_probability": 0.5},
        {},
    ),
    (
        "svre_adam",
        "svre",
        lambda: keras_svre.SVRE(0.05, restart_probability=0.2, adaptive="adam"),
        {"restart_probability": 0.2, "adaptive": "adam"},
        {},
    ),
    (
        "svre_vrad",
        "svre",
        lambda: keras_svre.SVRE(
            0.1, restart_probability=0.2, adaptive="vrad", beta_1=0.0, beta_2=0.9
        ),
        {"restart_probability": 0.2, "adaptive": "vrad", "beta_1": 0.0, "beta_2": 0.9},
        {},
    ),
    (
        "svre_reference_code_update_point",
        "svre",
        lambda: keras_svre.SVRE(0.2, restart_probability=0.2),
        {"restart_probability": 0.2, "update_point": "opponent_extrapolated"},
        {"update_point": "opponent_extrapolated"},
    ),
    (
        "svre_one_minibatch",
        "svre",
        lambda: keras_svre.SVRE(0.2, restart_probability=0.2),
        {"restart_probability": 0.2, "one_minibatch": True},
        {"one_minibatch": True},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_train_step_matches_numpy_model(case):
    _, method, factory, ref_kwargs, compile_kwargs = case
    iterations = 40
    k = 1 if method in ("sgda", "ogda") or compile_kwargs.get("one_minibatch") else 2
    batches = minibatch_order(iterations, k)
    game = make_game()
    optimizer = factory()
    lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    x_ref, y_ref, info = reference(game, batches, method, lr, seed=SEED, **ref_kwargs)
    train(game, optimizer, batches, **compile_kwargs)
    assert int(optimizer.iterations.numpy()) == iterations
    np.testing.assert_allclose(game.x.numpy(), x_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(game.y.numpy(), y_ref, rtol=1e-10, atol=1e-12)
    if method == "svre":
        # The schedule really exercised snapshots (and restarts where asked).
        assert int(optimizer.snapshots_taken.numpy()) == info["snapshots"] > 2
        if ref_kwargs.get("average_restart_probability"):
            assert info["restarts"] > 0
            x_avg, y_avg = optimizer.average_values([game.x, game.y])
            np.testing.assert_allclose(numpy(x_avg), info["average"][0], rtol=1e-10)


def test_per_player_optimizers_match_numpy_with_one_step_size():
    """`x_optimizer`/`y_optimizer` with equal settings equals one shared optimizer."""
    batches = minibatch_order(30, 2)
    game = make_game()
    # The rate as the optimizer holds it (float32 on TensorFlow).
    lr = float(numpy(keras_svre.SVRE(0.2).learning_rate))
    x_ref, y_ref, _ = reference(
        game, batches, "svre", lr, restart_probability=0.25, seed=SEED
    )
    game.compile(
        x_optimizer=keras_svre.SVRE(0.2, restart_probability=0.25),
        y_optimizer=keras_svre.SVRE(0.2, restart_probability=0.25),
    )
    game.fit(minibatches_of(batches), snapshot_data=components(DIM, 5), verbose=0)
    np.testing.assert_allclose(game.x.numpy(), x_ref, rtol=1e-10)
    np.testing.assert_allclose(game.y.numpy(), y_ref, rtol=1e-10)


def test_per_player_step_sizes_differ():
    data = minibatches_of(minibatch_order(10, 2))
    results = []
    for y_lr in (0.2, 0.05):
        game = make_game()
        game.compile(
            x_optimizer=keras_svre.Extragradient(0.2),
            y_optimizer=keras_svre.Extragradient(y_lr),
        )
        game.fit(data, verbose=0)
        results.append((game.x.numpy(), game.y.numpy()))
    assert not np.allclose(results[0][1], results[1][1])


def test_snapshot_mean_gradient_is_the_full_mean():
    game = make_game()
    game.compile(optimizer=keras_svre.SVRE(0.1))
    # Uneven batches (4 + 2): the pass must weigh them by size.
    mean = game.snapshot_mean_gradient(components(DIM, 4))
    field = ref.BilinearField(game.a.numpy(), game.b.numpy())
    gx, gy = field.mean(game.x.numpy(), game.y.numpy())
    np.testing.assert_allclose(numpy(mean[0]), gx, rtol=1e-12)
    np.testing.assert_allclose(numpy(mean[1]), gy, rtol=1e-12)


def test_variance_reduced_gradient_is_exact_at_the_snapshot():
    """At w = w_S, d_i = F_i(w_S) - F_i(w_S) + mu = mu for every minibatch i."""
    game = make_game()
    opt = keras_svre.SVRE(0.1)
    game.compile(optimizer=opt)
    game.take_snapshot(components(DIM, 3))
    point = game.current_point()
    directions = []
    for i in range(DIM):
        g, _ = game.field(np.array([i]), point)
        g_s, _ = game.field(np.array([i]), game.snapshot_point())
        directions.append([numpy(d) for d in game.variance_reduced_direction(g, g_s)])
    stacked = np.array([np.concatenate(d) for d in directions])
    assert np.allclose(stacked.std(axis=0), 0.0, atol=1e-14)
    raw = np.array(
        [
            np.concatenate([numpy(t) for t in game.field(np.array([i]), point)[0]])
            for i in range(DIM)
        ]
    )
    assert raw.std(axis=0).max() > 0.1


def test_restart_draws_follow_seed_and_counter():
    game = make_game()
    draws = [game.draw_uniform() for _ in range(3)]
    expected = [np.random.default_rng([SEED, c]).random() for c in range(3)]
    assert draws == expected
    assert int(game.restart_draws.numpy()) == 3


def test_default_restart_probability_is_one_over_n():
    game = make_game()
    game.compile(optimizer=keras_svre.SVRE(0.1))
    data = components(DIM, 2)
    assert game._restart_probability(data) == pytest.approx(1 / 3)
    if keras.backend.backend() == "tensorflow":
        with pytest.raises(ValueError, match="restart probability is 1/n"):
            game._restart_probability(data.repeat())


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="infinite tf.data datasets"
)
def test_infinite_snapshot_data_is_refused():
    game = make_game()
    game.compile(optimizer=keras_svre.SVRE(0.1, restart_probability=0.1))
    data = game.component_dataset().repeat()
    with pytest.raises(ValueError, match="snapshot pass needs a finite dataset"):
        game.fit(data, steps_per_epoch=2, verbose=0)


def test_compile_errors_are_clear():
    game = make_game()
    with pytest.raises(ValueError, match="No optimizer given"):
        game.compile()
    with pytest.raises(ValueError, match="players are"):
        game.compile(generator_optimizer=keras_svre.SVRE(0.1))
    with pytest.raises(ValueError, match="same family"):
        game.compile(
            x_optimizer=keras_svre.SVRE(0.1), y_optimizer=keras_svre.Extragradient()
        )
    with pytest.raises(ValueError, match="update_point"):
        game.compile(optimizer=keras_svre.SVRE(0.1), update_point="midpoint")
    with pytest.raises(ValueError, match="only applies to extragradient"):
        game.compile(optimizer=keras.optimizers.SGD(), one_minibatch=True)


def test_compile_refuses_ambiguous_optimizers_in_one_sentence():
    game = make_game()
    with pytest.raises(RuntimeError, match=r"Compile the game before fitting it"):
        game.fit(minibatches(np.zeros((2, 1))), verbose=0)
    with pytest.raises(ValueError, match=r"^Pass either `optimizer` .* not both\.$"):
        game.compile(optimizer=keras_svre.SVRE(0.1), x_optimizer=keras_svre.SVRE(0.1))
    with pytest.raises(
        ValueError, match=r"^No optimizer given for player\(s\) \['y'\]\.$"
    ):
        game.compile(x_optimizer=keras_svre.SVRE(0.1))
    shared = keras_svre.Extragradient(0.1)
    with pytest.raises(ValueError, match=r"^The same optimizer instance was given"):
        game.compile(x_optimizer=shared, y_optimizer=shared)
    # A refused compile leaves the game uncompiled; a good one then works.
    assert game.game_optimizers == []
    game.compile(x_optimizer=keras_svre.SVRE(0.1), y_optimizer=keras_svre.SVRE(0.2))
    assert game.player_names == ["x", "y"]
    assert game.player_learning_rates == pytest.approx({"x": 0.1, "y": 0.2})
    assert [len(v) for v in game.by_player(game.game_variables).values()] == [1, 1]


def test_fit_needs_a_dataset():
    game = make_game()
    game.compile(optimizer=keras_svre.SVRE(0.1))
    with pytest.raises(TypeError, match="tf.data.Dataset.*ArrayMinibatches"):
        game.fit(np.arange(DIM), verbose=0)


def test_history_reports_the_true_losses():
    game = make_game()
    game.compile(optimizer=keras.optimizers.SGD(0.0 + 1e-12))
    history = game.fit(components(DIM, DIM), epochs=1, verbose=0)
    expected = numpy(game.compute_player_losses(np.arange(DIM))["x"])
    assert history.history["x_loss"][0] == pytest.approx(expected, rel=1e-6)
    assert history.history["y_loss"][0] == pytest.approx(-expected, rel=1e-6)


def test_save_load_then_train_equals_uninterrupted(tmp_path):
    def data():
        return minibatches_of(minibatch_order(20, 2))

    snapshot = components(DIM, DIM)

    def fresh():
        game = make_game()
        game.compile(
            optimizer=keras_svre.SVRE(
                0.05,
                restart_probability=0.3,
                average_restart_probability=0.5,
                adaptive="adam",
            )
        )
        return game

    straight = fresh()
    straight.fit(data(), snapshot_data=snapshot, epochs=2, verbose=0)

    first = fresh()
    first.fit(data(), snapshot_data=snapshot, epochs=1, verbose=0)
    path = tmp_path / "game.keras"
    first.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, keras_svre.SVRE)
    for a, b in zip(first.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(loaded.restart_draws.numpy()) == int(first.restart_draws.numpy())
    loaded.fit(data(), snapshot_data=snapshot, epochs=1, verbose=0)
    np.testing.assert_allclose(loaded.x.numpy(), straight.x.numpy(), rtol=1e-12)
    np.testing.assert_allclose(loaded.y.numpy(), straight.y.numpy(), rtol=1e-12)


def test_loss_scale_factor_is_applied_and_divided_out():
    """Mixed-precision loss scaling changes nothing in exact arithmetic."""
    batches = minibatch_order(10, 2)
    results = []
    for scale in (None, 128.0):
        game = make_game()
        opt = keras_svre.SVRE(0.1, restart_probability=0.3, loss_scale_factor=scale)
        train(game, opt, batches)
        results.append((game.x.numpy(), game.y.numpy()))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-12)


def test_dynamic_loss_scale_grows_after_good_steps_and_changes_nothing():
    """The game runs a `LossScaleOptimizer`'s dynamic scaling itself: four
    good iterations with growth every two double the scale twice, and the
    iterates are those of the unscaled game (powers of 2 are exact)."""
    batches = minibatch_order(4, 2)
    plain = train(make_game(), keras_svre.SVRE(0.1, restart_probability=0.3), batches)
    game = make_game()
    game.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(
            keras_svre.SVRE(0.1, restart_probability=0.3),
            initial_scale=1.0,
            dynamic_growth_steps=2,
        )
    )
    assert game.dynamic_loss_scaling
    data = minibatches_of(batches)
    game.fit(data, snapshot_data=components(DIM, 4), epochs=1, verbose=0)
    assert game.iterations == 4
    assert float(numpy(game.loss_scale)) == 4.0
    np.testing.assert_allclose(numpy(game.x), numpy(plain.x), rtol=1e-12)
    np.testing.assert_allclose(numpy(game.y), numpy(plain.y), rtol=1e-12)


class _WrongLosses(keras_svre.BilinearGame):
    """The bilinear game with its losses broken in the way `broken` says."""

    def __init__(self, broken, **kwargs):
        super().__init__(**kwargs)
        self.broken = broken

    def compute_player_losses(self, data, training=True):
        losses = super().compute_player_losses(data, training)
        if self.broken == "key":
            return {"x": losses["x"], "why": losses["y"]}
        if self.broken == "not a dict":
            return [losses["x"], losses["y"]]
        # Per-example losses: one value per minibatch entry.
        index = keras.ops.reshape(keras.ops.cast(data, "float64"), (-1,))
        return {"x": losses["x"] * index, "y": losses["y"]}


@pytest.mark.parametrize(
    "broken, message",
    [
        (
            "key",
            "`compute_player_losses` must return a dict with one scalar loss per "
            "player, keyed by the players' names ['x', 'y']. Received: ['why', 'x'].",
        ),
        (
            "not a dict",
            "`compute_player_losses` must return a dict with one scalar loss per "
            "player, keyed by the players' names ['x', 'y']. Received: list.",
        ),
        (
            "per example",
            "`compute_player_losses` must return one scalar loss per player (a mean "
            "over the minibatch, e.g. `keras.ops.mean`). Received: a loss of shape "
            "(2,) for player 'x'.",
        ),
    ],
)
def test_wrong_player_losses_are_refused_before_training(broken, message):
    game = _WrongLosses(broken, dim=DIM, seed=SEED)
    game.compile(optimizer=keras_svre.SVRE(0.1))
    before = [numpy(v) for v in game.game_variables]
    with pytest.raises(ValueError) as raised:
        game.fit(components(DIM, 2), epochs=1, verbose=0)
    assert str(raised.value) == message
    assert game.iterations == 0
    for a, b in zip(before, game.game_variables, strict=True):
        np.testing.assert_array_equal(a, numpy(b))
