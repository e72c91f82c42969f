"""SVRE's coefficient on the correction (`SVRE(vr_coefficient=...)`, alpha-SVRE).

`d = F_i(w) - alpha (F_i(w_S) - mu_S)`, alpha a number, a schedule or
`"optimal"` (running averages C and V of the paired evaluations, per variable
tensor). The optimizer is checked by hand, and the game's train step
iteration by iteration against the NumPy model (`tests/numpy_reference.py`)
on the bilinear game and a linear GAN, with plain, Adam and one-minibatch
steps.
"""

import copy
import re

import keras
import numpy as np
import pytest

import keras_svre
from keras_svre import SVRE
from keras_svre.game import snapshots
from keras_svre.optimizers import methods
from tests import numpy_reference as ref
from tests.backend_helpers import batched, components, latent_bank, minibatches, numpy
from tests.optimizer_helpers import (
    apply_in_game_step,
    assert_close,
    assert_round_trip,
    variable,
)

pytestmark = pytest.mark.jax

W0 = [1.0, -2.0, 3.0]
U0 = [[0.5, 1.5], [-1.0, 2.0]]


def linear_decay(steps=30):
    """alpha-SVRG's linear decay from 1 to 0."""
    return keras.optimizers.schedules.PolynomialDecay(1.0, steps, 0.0)


def schedule_values(schedule):
    """The schedule as the optimizer reads it (float32 on both backends)."""
    return lambda t: float(numpy(schedule(t)))


# ---------------------------------------------------------------------- #
# Configuration.
# ---------------------------------------------------------------------- #
def test_config_defaults():
    config = assert_round_trip(SVRE())
    assert config["vr_coefficient"] == 1.0
    assert config["vr_statistics_decay"] == 0.9
    assert config["vr_statistics_reset"] is True
    assert config["vr_coefficient_max"] == 1.0


@pytest.mark.parametrize("value", [0.0, 0.5, 1, 2.5])
def test_config_number(value):
    config = assert_round_trip(SVRE(vr_coefficient=value, adaptive="adam"))
    assert config["vr_coefficient"] == float(value)
    assert type(config["vr_coefficient"]) is float


def test_config_optimal():
    optimizer = SVRE(
        vr_coefficient="optimal",
        vr_statistics_decay=0.5,
        vr_statistics_reset=False,
        vr_coefficient_max=0.75,
    )
    config = assert_round_trip(optimizer)
    assert config["vr_coefficient"] == "optimal"
    assert config["vr_statistics_decay"] == 0.5
    assert config["vr_statistics_reset"] is False
    assert config["vr_coefficient_max"] == 0.75


def test_config_schedule():
    schedule = linear_decay(40)
    config = assert_round_trip(SVRE(0.1, vr_coefficient=schedule))
    # Serialised as Keras serialises a learning-rate schedule.
    assert config["vr_coefficient"] == keras.optimizers.schedules.serialize(schedule)
    restored = SVRE.from_config(copy.deepcopy(config))
    assert isinstance(
        restored.vr_coefficient, keras.optimizers.schedules.PolynomialDecay
    )
    assert restored.vr_coefficient.get_config() == schedule.get_config()


# ---------------------------------------------------------------------- #
# Bad input: one line each, the rule and the value.
# ---------------------------------------------------------------------- #
INVALID = [
    (
        {"vr_coefficient": -0.5},
        "Argument `vr_coefficient` must be a finite number >= 0. "
        "Received: vr_coefficient=-0.5.",
    ),
    (
        {"vr_coefficient": float("nan")},
        "Argument `vr_coefficient` must be a finite number >= 0. "
        "Received: vr_coefficient=nan.",
    ),
    (
        {"vr_coefficient": float("inf")},
        "Argument `vr_coefficient` must be a finite number >= 0. "
        "Received: vr_coefficient=inf.",
    ),
    (
        {"vr_coefficient": "best"},
        "Argument `vr_coefficient` must be a number >= 0, a "
        "`LearningRateSchedule` or 'optimal'. Received: vr_coefficient='best'.",
    ),
    (
        {"vr_coefficient": True},
        "Argument `vr_coefficient` must be a number >= 0, a "
        "`LearningRateSchedule` or 'optimal'. Received: vr_coefficient=True.",
    ),
    (
        {"vr_coefficient": keras.optimizers.schedules.PolynomialDecay(-1.0, 10)},
        "A `vr_coefficient` schedule must start at a finite number >= 0. "
        "Received: a PolynomialDecay whose value at step 0 is -1.0.",
    ),
    (
        {"vr_statistics_decay": 1.0},
        "Argument `vr_statistics_decay` must be in the [0, 1) range. "
        "Received: vr_statistics_decay=1.0.",
    ),
    (
        {"vr_statistics_decay": -0.1},
        "Argument `vr_statistics_decay` must be in the [0, 1) range. "
        "Received: vr_statistics_decay=-0.1.",
    ),
    (
        {"vr_statistics_reset": "yes"},
        "Argument `vr_statistics_reset` must be True or False. "
        "Received: vr_statistics_reset='yes'.",
    ),
    (
        {"vr_coefficient_max": 0.0},
        "Argument `vr_coefficient_max` must be a finite number > 0. "
        "Received: vr_coefficient_max=0.0.",
    ),
    (
        {"vr_coefficient_max": float("inf")},
        "Argument `vr_coefficient_max` must be a finite number > 0. "
        "Received: vr_coefficient_max=inf.",
    ),
]


@pytest.mark.parametrize(
    "arguments, message", INVALID, ids=[str(a) for a, _ in INVALID]
)
def test_invalid_argument(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SVRE(**arguments)


@pytest.mark.parametrize("name", ["se-a", "sgda", "ogda"])
def test_methods_without_variance_reduction_refuse_a_coefficient(name):
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"Method {name!r} has no variance reduction: `vr_coefficient` "
            "applies to svre, svre-vrad, svre-opt, svre-vrad-opt only. "
            "Received: vr_coefficient=0.5."
        ),
    ):
        keras_svre.optimizers.get(name, vr_coefficient=0.5)


# ---------------------------------------------------------------------- #
# The method table.
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "name, adaptive, lr", [("svre-opt", None, 1e-2), ("svre-vrad-opt", "adam", 1e-3)]
)
def test_method_table_entries(name, adaptive, lr):
    entry = methods.method(name)
    assert entry.variance_reduced and entry.extrapolates
    assert entry.evaluations_per_iteration() == 4
    assert entry.evaluations_per_iteration(one_minibatch=True) == 3
    assert (entry.learning_rate, entry.adam_based) == (lr, adaptive is not None)
    optimizer = keras_svre.optimizers.get(name, restart_probability=0.1)
    assert type(optimizer) is SVRE
    assert (optimizer.adaptive, optimizer.vr_coefficient) == (adaptive, "optimal")
    assert optimizer.restart_probability == 0.1
    with pytest.raises(ValueError, match="choose the method that has"):
        keras_svre.optimizers.get(name, vr_coefficient=0.5)
    # The statistics' settings reach the optimizer.
    tuned = keras_svre.optimizers.get(name, vr_statistics_decay=0.5)
    assert tuned.vr_statistics_decay == 0.5


def test_applicable_drops_the_coefficient_for_other_methods():
    arguments = {"vr_coefficient": 0.5, "restart_probability": 0.1}
    assert methods.method("adam").applicable(**arguments) == {}
    assert methods.method("svre").applicable(**arguments) == arguments


# ---------------------------------------------------------------------- #
# The optimizer by hand.
# ---------------------------------------------------------------------- #
def built(variables, **kwargs):
    kwargs.setdefault("learning_rate", 0.1)
    optimizer = SVRE(**kwargs)
    optimizer.build(variables)
    return optimizer


MU = [np.array([0.25, -0.5, 1.0]), np.array([[1.0, 2.0], [3.0, 4.0]])]
G = [np.array([1.0, 2.0, 3.0]), np.array([[0.5, 0.5], [0.5, 0.5]])]
G_S = [np.array([-1.0, 0.5, 2.0]), np.array([[1.5, -0.5], [0.0, 2.5]])]


def test_fixed_coefficient_by_hand():
    w, u = variable(W0), variable(U0)
    optimizer = built([w, u], vr_coefficient=0.25)
    optimizer.take_snapshot([w, u], MU)
    d_w, d_u = optimizer.variance_reduced_gradient(G, G_S, [w, u])
    # [1, 2, 3] - 0.25 * ([-1, 0.5, 2] - [0.25, -0.5, 1]).
    assert_close(d_w, [1.3125, 1.75, 2.75])
    assert_close(d_u, G[1] - 0.25 * (G_S[1] - MU[1]))
    # 0 is the plain stochastic field, whatever the snapshot.
    zero = built([variable(W0)], vr_coefficient=0.0)
    zero.take_snapshot(zero._trainable_variables, [MU[0]])
    (d,) = zero.variance_reduced_gradient([G[0]], [G_S[0]], zero._trainable_variables)
    assert_close(d, G[0])
    # No statistics kept, none recorded.
    assert not any("correction" in v.name for v in optimizer.variables)
    before = [v.numpy().copy() for v in optimizer.variables]
    optimizer.record_correction([(G, G_S)], [w, u])
    for slot, value in zip(optimizer.variables, before, strict=True):
        np.testing.assert_array_equal(slot.numpy(), value)


def test_schedule_is_read_at_the_iterations():
    w = variable(W0)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [0, 1], [1.0, 0.5, 0.25]
    )
    optimizer = built([w], vr_coefficient=schedule)
    optimizer.take_snapshot([w], [MU[0]])
    for alpha in (1.0, 0.5, 0.25, 0.25):
        (coefficient,) = optimizer.vr_coefficients([w])
        assert float(numpy(coefficient)) == alpha
        (d,) = optimizer.variance_reduced_gradient([G[0]], [G_S[0]], [w])
        assert_close(d, G[0] - alpha * (G_S[0] - MU[0]))
        apply_in_game_step(optimizer, [np.zeros(3)], [w])


def test_optimal_statistics_by_hand():
    w, u = variable(W0), variable(U0)
    optimizer = built(
        [w, u],
        vr_coefficient="optimal",
        vr_statistics_decay=0.5,
        vr_coefficient_max=2.0,
    )
    optimizer.take_snapshot([w, u], MU)
    # Before any statistics: alpha = min(1, max) = 1, plain SVRE.
    assert [float(numpy(a)) for a in optimizer.vr_coefficients([w, u])] == [1.0, 1.0]
    d_w, _ = optimizer.variance_reduced_gradient(G, G_S, [w, u])
    assert_close(d_w, G[0] - (G_S[0] - MU[0]))

    # C is centred on mu_S. Pair 1 for w: f = G - MU = [0.75, 2.5, 2] and
    # e = G_S - MU = [-1.25, 1, 1]: <f, e> = 3.5625, ||e||^2 = 3.5625.
    # Pair 2, (2 G, G_S): f = [1.75, 4.5, 5], <f, e> = 7.3125.
    # Means: c = 5.4375, v = 3.5625.
    pairs = [(G, G_S), ([2 * g for g in G], G_S)]
    optimizer.record_correction(pairs, [w, u])
    assert_close(optimizer._covariances[0], 0.5 * 5.4375)
    assert_close(optimizer._variances[0], 0.5 * 3.5625)
    # For u: f = [[-.5, -1.5], [-2.5, -3.5]], e = [[.5, -2.5], [-3, -1.5]]:
    # <f, e> = 16.25, then f = [[0, -1], [-2, -3]]: 13; ||e||^2 = 17.75.
    assert_close(optimizer._covariances[1], 0.5 * 14.625)
    assert_close(optimizer._variances[1], 0.5 * 17.75)
    alpha_w, alpha_u = (float(numpy(a)) for a in optimizer.vr_coefficients([w, u]))
    assert alpha_w == pytest.approx(5.4375 / 3.5625, rel=1e-14)
    assert alpha_u == pytest.approx(14.625 / 17.75, rel=1e-14)
    d_w, d_u = optimizer.variance_reduced_gradient(G, G_S, [w, u])
    assert_close(d_w, G[0] - alpha_w * (G_S[0] - MU[0]))
    assert_close(d_u, G[1] - alpha_u * (G_S[1] - MU[1]))

    # A second record: the running averages.
    optimizer.record_correction([(G, G_S)], [w, u])
    assert_close(optimizer._covariances[0], 0.25 * 5.4375 + 0.5 * 3.5625)
    assert_close(optimizer._variances[0], 0.25 * 3.5625 + 0.5 * 3.5625)

    # Clipped at vr_coefficient_max: f = 10 G - MU, <f, e> = 37.3125.
    optimizer.record_correction([([10 * g for g in G], G_S)], [w, u])
    assert float(numpy(optimizer.vr_coefficients([w])[0])) == 2.0
    # Clipped at 0: pairs with f = -e, each <f, e> = -3.5625, make C < 0.
    against = [2 * m - g for m, g in zip(MU, G_S, strict=True)]
    for _ in range(4):
        optimizer.record_correction([(against, G_S)], [w, u])
    assert float(optimizer._covariances[0].numpy()) < 0
    assert float(numpy(optimizer.vr_coefficients([w])[0])) == 0.0

    # A snapshot restarts C at V, alpha at 1 (vr_statistics_reset defaults to
    # True); V keeps its weight.
    variances = [float(slot.numpy()) for slot in optimizer._variances]
    optimizer.take_snapshot([w, u], MU)
    assert [float(slot.numpy()) for slot in optimizer._variances] == variances
    assert [float(slot.numpy()) for slot in optimizer._covariances] == variances
    assert [float(numpy(a)) for a in optimizer.vr_coefficients([w, u])] == [1.0, 1.0]


def test_optimal_statistics_kept_across_snapshots_without_reset():
    w = variable(W0)
    optimizer = built(
        [w], vr_coefficient="optimal", vr_statistics_reset=False, vr_coefficient_max=0.5
    )
    optimizer.take_snapshot([w], [MU[0]])
    # Before any statistics the fallback is min(1, max).
    assert float(numpy(optimizer.vr_coefficients([w])[0])) == 0.5
    optimizer.record_correction([([G[0]], [G_S[0]])], [w])
    kept = (optimizer._covariances[0].numpy(), optimizer._variances[0].numpy())
    optimizer.take_snapshot([w], [MU[0]])
    assert (optimizer._covariances[0].numpy(), optimizer._variances[0].numpy()) == kept


def test_optimal_slots_are_scalars_per_variable():
    w, u = variable(W0), variable(U0)
    optimizer = built([w, u], vr_coefficient="optimal")
    names = [v.name for v in optimizer.variables]
    for kind in ("correction_covariance", "correction_variance"):
        assert sum(name.endswith(f"_{kind}") for name in names) == 2, names
    for slot in optimizer._covariances + optimizer._variances:
        assert slot.shape == () and slot.dtype == "float64" and not slot.trainable


# ---------------------------------------------------------------------- #
# The train step against the NumPy model, iteration by iteration.
# ---------------------------------------------------------------------- #
class Trajectory(keras.callbacks.Callback):
    """After each iteration: the flat point, and each optimizer's C and V."""

    def __init__(self, players):
        super().__init__()
        self.players = players
        self.points, self.statistics = [], []

    def on_train_batch_end(self, batch, logs=None):
        self.model.iterations  # noqa: B018  (syncs the variables on JAX)
        self.points.append(
            np.concatenate([np.ravel(v.numpy()) for v in self.players()])
        )
        (optimizer,) = self.model.game_optimizers
        if optimizer.estimates_coefficient:
            self.statistics.append(
                (
                    np.array([float(s.numpy()) for s in optimizer._covariances]),
                    np.array([float(s.numpy()) for s in optimizer._variances]),
                )
            )


def assert_trajectory(trajectory, reference, rtol=1e-10, atol=1e-12):
    assert len(trajectory.points) == len(reference)
    for t, (point, (w, _, c, v)) in enumerate(
        zip(trajectory.points, reference, strict=True)
    ):
        np.testing.assert_allclose(point, w, rtol=rtol, atol=atol, err_msg=f"t={t}")
        if trajectory.statistics:
            covariance, variance = trajectory.statistics[t]
            np.testing.assert_allclose(covariance, c, rtol=rtol, atol=atol)
            np.testing.assert_allclose(variance, v, rtol=rtol, atol=atol)


MODES = {
    "half": (lambda: 0.5, {}),
    "schedule": (lambda: linear_decay(16), {}),
    "optimal": (lambda: "optimal", {}),
    "optimal-kept": (
        lambda: "optimal",
        {
            "vr_statistics_decay": 0.5,
            "vr_statistics_reset": False,
            "vr_coefficient_max": 1.5,
        },
    ),
}
VARIANTS = {
    "plain": ({"learning_rate": 0.2}, {}),
    "adam": ({"learning_rate": 0.05, "adaptive": "adam", "beta_1": 0.5}, {}),
    "one-minibatch": ({"learning_rate": 0.2}, {"one_minibatch": True}),
}


def optimizer_and_reference(mode, variant, restart_probability):
    value, settings = MODES[mode][0](), MODES[mode][1]
    arguments, compile_kwargs = VARIANTS[variant]
    optimizer = SVRE(
        restart_probability=restart_probability,
        vr_coefficient=value,
        **settings,
        **arguments,
    )
    ref_kwargs = {
        "restart_probability": restart_probability,
        "vr_coefficient": (
            schedule_values(value)
            if isinstance(value, keras.optimizers.schedules.LearningRateSchedule)
            else value
        ),
        **settings,
        **{k: v for k, v in arguments.items() if k != "learning_rate"},
        **compile_kwargs,
    }
    return optimizer, ref_kwargs, compile_kwargs


DIM, SEED = 6, 3


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("mode", list(MODES))
def test_bilinear_train_step_matches_numpy(mode, variant):
    iterations = 16
    optimizer, ref_kwargs, compile_kwargs = optimizer_and_reference(
        mode, variant, restart_probability=0.25
    )
    k = 1 if compile_kwargs.get("one_minibatch") else 2
    rng = np.random.default_rng(7)
    batches = [list(rng.choice(DIM, 2, replace=False)) for _ in range(iterations * k)]
    game = keras_svre.BilinearGame(dim=DIM, seed=SEED)
    field = ref.BilinearField(game.a.numpy(), game.b.numpy())
    lr = float(numpy(optimizer.learning_rate))
    _, _, info = ref.run(
        field,
        game.x.numpy(),
        game.y.numpy(),
        batches,
        "svre",
        lr,
        seed=SEED,
        **ref_kwargs,
    )
    game.compile(optimizer=optimizer, **compile_kwargs)
    trajectory = Trajectory(lambda: [game.x, game.y])
    game.fit(
        minibatches(np.array(batches, np.int64)),
        snapshot_data=components(DIM, 4),
        callbacks=[trajectory],
        verbose=0,
    )
    assert_trajectory(trajectory, info["trajectory"])
    # Snapshots in between, and alpha really moving (but for the constant).
    assert 2 < info["snapshots"] == int(optimizer.snapshots_taken.numpy())
    alphas = np.array([alpha for _, alpha, _, _ in info["trajectory"]])
    assert len(np.unique(alphas)) > 3 or mode == "half"


N, LATENT, PIXELS = 12, 3, 4


def linear_gan(seed=0):
    keras.utils.set_random_seed(seed)
    generator = keras.Sequential(
        [
            keras.Input((LATENT,), dtype="float64"),
            keras.layers.Dense(PIXELS, dtype="float64"),
        ]
    )
    discriminator = keras.Sequential(
        [
            keras.Input((PIXELS,), dtype="float64"),
            keras.layers.Dense(1, dtype="float64"),
        ]
    )
    # The NumPy model's finite sum has one fixed set of latents.
    return keras_svre.GAN(
        generator,
        discriminator,
        num_examples=N,
        seed=seed,
        dtype="float64",
        latents="fixed",
    )


def flat(variables):
    return np.concatenate([np.ravel(v.numpy()) for v in variables])


GAN_CASES = [
    ("half", "plain"),
    ("schedule", "adam"),
    ("optimal", "plain"),
    ("optimal", "adam"),
    ("optimal", "one-minibatch"),
    ("optimal-kept", "adam"),
]


@pytest.mark.parametrize(
    "mode, variant", GAN_CASES, ids=["-".join(c) for c in GAN_CASES]
)
def test_gan_train_step_matches_numpy(mode, variant):
    iterations = 8
    optimizer, ref_kwargs, compile_kwargs = optimizer_and_reference(
        mode, variant, restart_probability=0.3
    )
    k = 1 if compile_kwargs.get("one_minibatch") else 2
    images = np.random.default_rng(1).normal(size=(N, PIXELS))
    gan = linear_gan()
    gan.compile(optimizer=optimizer, **compile_kwargs)
    rng = np.random.default_rng(5)
    order = [rng.choice(N, 4, replace=False) for _ in range(iterations * k)]
    field = ref.LinearGANField(images, latent_bank(gan))
    lr = float(numpy(optimizer.learning_rate))
    _, _, info = ref.run(
        field,
        flat(gan.generator.trainable_variables),
        flat(gan.discriminator.trainable_variables),
        [list(b) for b in order],
        "svre",
        lr,
        seed=gan.seed,
        # The variable tensors: G's kernel and bias, D's kernel and bias.
        segments=[LATENT * PIXELS, PIXELS, PIXELS, 1],
        **ref_kwargs,
    )
    trajectory = Trajectory(
        lambda: (
            gan.generator.trainable_variables + gan.discriminator.trainable_variables
        )
    )
    order = np.asarray(order, np.int64)
    gan.fit(
        minibatches((order, images[order])),
        snapshot_data=batched((np.arange(N, dtype=np.int64), images), 5),
        callbacks=[trajectory],
        verbose=0,
    )
    assert_trajectory(trajectory, info["trajectory"], rtol=1e-9, atol=1e-12)
    assert info["snapshots"] > 1


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_coefficient_one_is_svre_bit_for_bit(variant):
    """`vr_coefficient=1` (int or float) trains exactly as SVRE always did."""
    arguments, compile_kwargs = VARIANTS[variant]
    k = 1 if compile_kwargs.get("one_minibatch") else 2
    rng = np.random.default_rng(11)
    batches = np.array(
        [rng.choice(DIM, 2, replace=False) for _ in range(12 * k)], np.int64
    )
    results = []
    for coefficient in ({}, {"vr_coefficient": 1}, {"vr_coefficient": 1.0}):
        game = keras_svre.BilinearGame(dim=DIM, seed=SEED)
        optimizer = SVRE(restart_probability=0.25, **arguments, **coefficient)
        game.compile(optimizer=optimizer, **compile_kwargs)
        game.fit(minibatches(batches), snapshot_data=components(DIM, 4), verbose=0)
        results.append((game.x.numpy(), game.y.numpy(), len(optimizer.variables)))
    for x, y, slots in results[1:]:
        np.testing.assert_array_equal(x, results[0][0])
        np.testing.assert_array_equal(y, results[0][1])
        assert slots == results[0][2]
    # And the NumPy model of plain SVRE agrees.
    game = keras_svre.BilinearGame(dim=DIM, seed=SEED)
    field = ref.BilinearField(game.a.numpy(), game.b.numpy())
    lr = float(numpy(SVRE(**arguments).learning_rate))
    ref_arguments = {k: v for k, v in arguments.items() if k != "learning_rate"}
    x, y, _ = ref.run(
        field,
        game.x.numpy(),
        game.y.numpy(),
        [list(b) for b in batches],
        "svre",
        lr,
        seed=SEED,
        restart_probability=0.25,
        **ref_arguments,
        **compile_kwargs,
    )
    np.testing.assert_allclose(results[0][0], x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(results[0][1], y, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------- #
# Skipped iterations, saving and resuming, convergence.
# ---------------------------------------------------------------------- #
def optimal_gan(**settings):
    gan = linear_gan()
    gan.compile(
        generator_optimizer=keras_svre.optimizers.get(
            "svre-vrad-opt", 0.05, beta_1=0.5, restart_probability=0.5, **settings
        ),
        discriminator_optimizer=keras_svre.optimizers.get(
            "svre-opt", 0.1, restart_probability=0.5, **settings
        ),
    )
    return gan


def statistics(gan):
    return [
        float(s.numpy())
        for optimizer in gan.game_optimizers
        for s in optimizer._covariances + optimizer._variances
    ]


def test_a_skipped_iteration_records_no_statistics():
    images = np.random.default_rng(1).normal(size=(N, PIXELS))
    order = np.array(
        [np.random.default_rng(s).choice(N, 4, replace=False) for s in range(6)]
    )
    snapshot = batched((np.arange(N, dtype=np.int64), images), N)
    good = optimal_gan(vr_statistics_reset=False)
    good.fit(minibatches((order, images[order])), snapshot_data=snapshot, verbose=0)
    assert all(value != 0.0 for value in statistics(good))

    # One more iteration, on minibatches of NaN images.
    longer = np.concatenate([order, order[-2:]])
    broken = images[longer]
    broken[-2:] = np.nan
    gan = optimal_gan(vr_statistics_reset=False)
    with pytest.raises(keras_svre.callbacks.NonFiniteLossError):
        gan.fit(minibatches((longer, broken)), snapshot_data=snapshot, verbose=0)
    assert statistics(gan) == statistics(good)
    assert gan.iterations == good.iterations == 3


def test_save_load_keeps_the_statistics_and_resumes_exactly(tmp_path):
    images = np.random.default_rng(1).normal(size=(N, PIXELS))
    order = np.array(
        [np.random.default_rng(s).choice(N, 4, replace=False) for s in range(8)]
    )
    data = minibatches((order, images[order]))
    snapshot = batched((np.arange(N, dtype=np.int64), images), N)

    straight = optimal_gan(vr_statistics_reset=False)
    straight.fit(data, snapshot_data=snapshot, epochs=2, verbose=0)
    first = optimal_gan(vr_statistics_reset=False)
    first.fit(data, snapshot_data=snapshot, epochs=1, verbose=0)
    assert all(value != 0.0 for value in statistics(first))
    first.save(tmp_path / "gan.keras")
    loaded = keras.models.load_model(tmp_path / "gan.keras")
    for saved, back in zip(first.game_optimizers, loaded.game_optimizers, strict=True):
        assert back.get_config() == saved.get_config()
        assert back.vr_coefficient == "optimal"
        for a, b in zip(saved.variables, back.variables, strict=True):
            np.testing.assert_array_equal(numpy(a), numpy(b), err_msg=a.path)
    assert statistics(loaded) == statistics(first)
    loaded.fit(data, snapshot_data=snapshot, epochs=1, verbose=0)
    for a, b in zip(straight.trainable_weights, loaded.trainable_weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)
    np.testing.assert_allclose(statistics(loaded), statistics(straight), rtol=1e-12)


def test_bilinear_game_still_converges_with_the_optimal_coefficient():
    """The paper's bilinear game (Fig. 4), small: as close as SVRE gets."""
    game = keras_svre.BilinearGame(dim=20, seed=0)
    start = game.distance_to_solution()
    game.compile(
        optimizer=SVRE(0.3, average_restart_probability=0.1, vr_coefficient="optimal"),
        steps_per_execution=10,
    )
    data = (
        game.component_dataset(seed=0)
        if keras.backend.backend() == "tensorflow"
        else game.component_minibatches(seed=0)
    )
    game.fit(data, epochs=150, verbose=0)
    # SVRE (alpha = 1) reaches 0.0037 of the start here; SE moves away.
    assert game.averaged_distance() < 0.01 * start
    (optimizer,) = game.game_optimizers
    alphas = [float(numpy(a)) for a in optimizer.vr_coefficients([game.x, game.y])]
    assert all(0.0 <= a <= 1.0 for a in alphas)


# ---------------------------------------------------------------------- #
# Snapshots when the correlation is low (`restart_correlation`).
# ---------------------------------------------------------------------- #
def test_estimated_correlation_by_hand():
    one = {
        "covariance": [2.0, -1.0],
        "variance": [4.0, 0.0],
        "field_variance": [3.0, 1.0],
    }
    # Only the first tensor explains anything (V = 0 for the second): 2^2 / 4
    # of the total U = 4.
    assert snapshots.estimated_correlation([one]) == 0.5
    two = {"covariance": [3.0], "variance": [1.0], "field_variance": [12.0]}
    assert snapshots.estimated_correlation([one, two]) == np.sqrt(10.0 / 16.0)
    # A negative covariance removes nothing.
    negative = {"covariance": [-3.0], "variance": [1.0], "field_variance": [12.0]}
    assert snapshots.estimated_correlation([negative]) == 0.0
    # No statistics yet.
    empty = {"covariance": [0.0], "variance": [0.0], "field_variance": [0.0]}
    assert snapshots.estimated_correlation([empty]) is None
    assert snapshots.estimated_correlation([]) is None


def test_correlation_restart_triggers_below_the_threshold():
    w = variable(W0)
    optimizer = built([w], restart_correlation=0.5, vr_statistics_decay=0.0)
    assert optimizer.keeps_statistics and not optimizer.estimates_coefficient
    optimizer.take_snapshot([w], [np.zeros(3)])
    assert not snapshots.correlation_restart([optimizer], 0.5)  # no estimate
    # <g, e> = 1, ||e||^2 = 1, ||g - mu||^2 = 1 + 4 = 5: rho = sqrt(1 / 5).
    e, g = np.array([1.0, 0.0, 0.0]), np.array([1.0, 2.0, 0.0])
    optimizer.record_correction([([g], [e])], [w])
    statistics = optimizer.correction_statistics()
    assert statistics["covariance"].tolist() == [1.0]
    assert statistics["variance"].tolist() == [1.0]
    assert statistics["field_variance"].tolist() == [5.0]
    assert snapshots.correlation_restart([optimizer], 0.5)  # 0.447 < 0.5
    assert not snapshots.correlation_restart([optimizer], 0.4)
    # At the snapshot C and U restart at V: rho = 1, no new snapshot.
    optimizer.take_snapshot([w], [np.zeros(3)])
    statistics = optimizer.correction_statistics()
    assert statistics["covariance"].tolist() == [1.0]
    assert statistics["field_variance"].tolist() == [1.0]
    assert snapshots.estimated_correlation([statistics]) == 1.0
    assert not snapshots.correlation_restart([optimizer], 0.99)
    # The coefficient stays SVRE's, bit for bit.
    (d,) = optimizer.variance_reduced_gradient([G[0]], [G_S[0]], [w])
    np.testing.assert_array_equal(numpy(d), G[0] - G_S[0] + 0.0)


def test_restart_correlation_config_and_bad_input():
    config = assert_round_trip(SVRE(restart_correlation=0.3))
    assert config["restart_correlation"] == 0.3
    assert assert_round_trip(SVRE())["restart_correlation"] is None
    for value in (0.0, 1.0, -0.5, "low"):
        with pytest.raises(
            ValueError,
            match=re.escape(
                "Argument `restart_correlation` must be in the (0, 1) range. "
                f"Received: restart_correlation={value!r}."
            ),
        ):
            SVRE(restart_correlation=value)
    with pytest.raises(ValueError, match=re.escape("not both. Received:")):
        SVRE(restart_correlation=0.5, restart_probability=0.1)
    with pytest.raises(ValueError, match=re.escape("needs `vr_statistics_reset=True`")):
        SVRE(restart_correlation=0.5, vr_statistics_reset=False)


@pytest.mark.parametrize(
    "coefficient, threshold, one_minibatch",
    [(1.0, 0.95, False), ("optimal", 0.95, False), ("optimal", 0.97, True)],
)
def test_snapshots_by_correlation_match_numpy(coefficient, threshold, one_minibatch):
    iterations = 24
    k = 1 if one_minibatch else 2
    rng = np.random.default_rng(7)
    batches = [list(rng.choice(DIM, 2, replace=False)) for _ in range(iterations * k)]
    game = keras_svre.BilinearGame(dim=DIM, seed=SEED)
    optimizer = SVRE(
        0.2,
        vr_coefficient=coefficient,
        restart_correlation=threshold,
        average_restart_probability=0.5,
    )
    field = ref.BilinearField(game.a.numpy(), game.b.numpy())
    lr = float(numpy(optimizer.learning_rate))
    _, _, info = ref.run(
        field,
        game.x.numpy(),
        game.y.numpy(),
        batches,
        "svre",
        lr,
        seed=SEED,
        vr_coefficient=coefficient,
        restart_correlation=threshold,
        average_restart_probability=0.5,
        one_minibatch=one_minibatch,
    )
    game.compile(optimizer=optimizer, one_minibatch=one_minibatch)
    trajectory = Trajectory(lambda: [game.x, game.y])
    game.fit(
        minibatches(np.array(batches, np.int64)),
        snapshot_data=components(DIM, 4),
        callbacks=[trajectory],
        verbose=0,
    )
    assert_trajectory(trajectory, info["trajectory"])
    # Snapshots came from the trigger, neither never nor after every iteration.
    assert 2 < info["snapshots"] == int(optimizer.snapshots_taken.numpy())
    assert info["snapshots"] < iterations
    # No Bernoulli draw was made (the restarts from the average draw once
    # per snapshot after the first).
    assert int(game.restart_draws.numpy()) == info["snapshots"] - 1


def test_snapshots_by_correlation_resume_exactly(tmp_path):
    def fresh():
        game = keras_svre.BilinearGame(dim=DIM, seed=SEED)
        game.compile(
            optimizer=SVRE(0.2, vr_coefficient="optimal", restart_correlation=0.9)
        )
        return game

    rng = np.random.default_rng(3)
    data = minibatches(
        np.array([rng.choice(DIM, 2, replace=False) for _ in range(20)], np.int64)
    )
    snapshot = components(DIM, 4)
    straight = fresh()
    straight.fit(data, snapshot_data=snapshot, epochs=2, verbose=0)
    first = fresh()
    first.fit(data, snapshot_data=snapshot, epochs=1, verbose=0)
    first.save(tmp_path / "game.keras")
    loaded = keras.models.load_model(tmp_path / "game.keras")
    loaded.fit(data, snapshot_data=snapshot, epochs=1, verbose=0)
    assert loaded.snapshots_taken == straight.snapshots_taken > first.snapshots_taken
    np.testing.assert_allclose(loaded.x.numpy(), straight.x.numpy(), rtol=1e-12)
    np.testing.assert_allclose(loaded.y.numpy(), straight.y.numpy(), rtol=1e-12)
