"""The bilinear game of the paper (Fig. 4): SVRE converges where SE diverges."""

import numpy as np
import pytest

import keras_svre
from tests.backend_helpers import BACKEND, components, numpy

pytestmark = pytest.mark.jax


def train(optimizer, dim, passes, seed=0, **compile_kwargs):
    game = keras_svre.BilinearGame(dim=dim, seed=seed)
    start = game.distance_to_solution()
    game.compile(optimizer=optimizer, steps_per_execution=10, **compile_kwargs)
    # One epoch = one pass over the n = dim components.
    data = (
        game.component_dataset(seed=seed)
        if BACKEND == "tensorflow"
        else game.component_minibatches(seed=seed)
    )
    game.fit(data, epochs=passes, verbose=0)
    return start, game


def test_solution_is_a_fixed_point_of_the_mean_game():
    game = keras_svre.BilinearGame(dim=8, seed=1)
    x_star, y_star = game.solution()
    game.x.assign(x_star)
    game.y.assign(y_star)
    game.compile(optimizer=keras_svre.SVRE(0.1))
    mean = game.snapshot_mean_gradient(components(8, 3))
    np.testing.assert_allclose(numpy(mean[0]), 0.0, atol=1e-12)
    np.testing.assert_allclose(numpy(mean[1]), 0.0, atol=1e-12)


def test_svre_with_restarts_from_the_average_converges_small_game():
    start, game = train(
        keras_svre.SVRE(0.3, average_restart_probability=0.1), dim=20, passes=150
    )
    assert game.averaged_distance() < 0.1 * start


def test_one_minibatch_variant_converges_too():
    """One minibatch for the extrapolation and the update (3 evaluations)."""
    start, game = train(
        keras_svre.SVRE(0.3, average_restart_probability=0.1),
        dim=20,
        passes=100,
        one_minibatch=True,
    )
    assert game.averaged_distance() < 0.1 * start


def test_stochastic_extragradient_does_not_get_closer_at_the_same_step():
    start, game = train(keras_svre.Extragradient(0.3), dim=20, passes=150)
    assert game.distance_to_solution() > start


@pytest.mark.slow
def test_svre_reaches_1e_3_in_600_passes_paper_setting():
    start, game = train(
        keras_svre.SVRE(0.3, average_restart_probability=0.1), dim=100, passes=600
    )
    assert start > 15
    assert game.averaged_distance() < 1e-3
