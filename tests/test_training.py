"""Warm start (SVRE-GAN-WS) and the per-epoch step-size decay."""

import numpy as np
import pytest

import keras_svre
from keras_svre.training import epoch_decay, fit_with_warm_start


def test_warm_start_switches_to_svre_with_a_snapshot_at_the_switch():
    game = keras_svre.BilinearGame(dim=6, seed=0)
    data = game.component_dataset(batch_size=1, seed=0)
    warm = keras_svre.optimizers.get("se-a", 0.01)
    svre = keras_svre.SVRE(0.05, restart_probability=1e-9)
    history = fit_with_warm_start(
        game,
        data,
        warm_optimizer=warm,
        warm_epochs=2,
        optimizer=svre,
        epochs=3,
        verbose=0,
    )
    assert int(warm.iterations.numpy()) == 2 * 3  # 6 components, 2 per iteration
    assert int(svre.iterations.numpy()) == 3
    # The snapshot is the point where the warm start left off.
    assert int(svre.snapshots_taken.numpy()) == 1
    assert history.epoch == [0, 1, 2]
    assert len(history.history["x_loss"]) == 3
    assert game.variance_reduced and game.extrapolates


def test_snapshot_at_switch_equals_the_warm_start_end_point():
    game = keras_svre.BilinearGame(dim=6, seed=0)
    data = game.component_dataset(batch_size=1, seed=0)
    warm = keras_svre.Extragradient(0.05)
    game.compile(optimizer=warm)
    game.fit(data, epochs=1, verbose=0)
    x_end = game.x.numpy().copy()
    svre = keras_svre.SVRE(1e-12, restart_probability=1e-9)
    game.compile(optimizer=svre)
    game.fit(data, epochs=1, verbose=0)
    np.testing.assert_allclose(svre.snapshot_values([game.x])[0].numpy(), x_end)


def test_warm_epochs_are_validated():
    game = keras_svre.BilinearGame(dim=6, seed=0)
    with pytest.raises(ValueError, match="warm_epochs"):
        fit_with_warm_start(
            game,
            game.component_dataset(),
            warm_optimizer=keras_svre.Extragradient(),
            warm_epochs=3,
            optimizer=keras_svre.SVRE(),
            epochs=2,
        )


def test_epoch_decay_is_a_staircase_per_epoch():
    schedule = epoch_decay(0.1, iterations_per_epoch=10, rate=0.5)
    values = [float(schedule(step)) for step in (0, 9, 10, 25)]
    assert values == pytest.approx([0.1, 0.1, 0.05, 0.025])
    with pytest.raises(ValueError, match="rate"):
        epoch_decay(0.1, 10, 1.5)


def test_schedule_drives_extrapolation_and_update():
    game = keras_svre.BilinearGame(dim=4, seed=0)
    opt = keras_svre.SVRE(epoch_decay(0.1, 1, 0.5), restart_probability=1e-9)
    game.compile(optimizer=opt)
    game.fit(game.component_dataset(batch_size=1), epochs=1, verbose=0)
    assert float(opt.learning_rate) == pytest.approx(0.1 * 0.5**2)
