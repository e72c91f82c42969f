"""Each preset builds and trains a few steps (tiny, on TFDS mock data)."""

import pytest
import tensorflow_datasets as tfds

import keras_svre
from keras_svre import presets

# Each preset traces its networks twice (warm start, then the method): about a
# minute each on 2 cores, so the default suite runs one warm-started SVRE preset
# and `pytest -m slow` the rest.
FAST = "cifar10-svre-ws"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=[] if n == FAST else [pytest.mark.slow])
        for n in presets.names()
    ],
)
def test_preset_runs_warm_start_then_its_method(name):
    preset = presets.get(name)
    with tfds.testing.mock_data(num_examples=48):
        gan, _, history = presets.train(
            name,
            epochs=2,
            warm_start_epochs=1,
            width=4,
            batch_size=8,
            take=48,
            verbose=0,
            steps_per_epoch=1,
        )
    assert len(history.epoch) == 2
    expected = keras_svre.optimizers.get(preset.method, 0.1)
    assert type(gan.game_optimizers[0]) is type(expected)
    if preset.warm_start_method and preset.method.startswith("svre"):
        # The switch took the first snapshot.
        assert int(gan.svre_optimizers[0].snapshots_taken.numpy()) >= 1
    assert all(
        float(v) == float(v) for values in history.history.values() for v in values
    )


def test_spectral_normalised_discriminator_trains_under_svre():
    preset = presets.get("cifar10-svre")
    assert preset.architecture == "dcgan32_sa"
    with tfds.testing.mock_data(num_examples=32):
        gan, _, _ = presets.train(
            "cifar10-svre",
            epochs=1,
            width=4,
            batch_size=8,
            take=32,
            verbose=0,
            steps_per_epoch=2,
        )
    spectral = [v for v in gan.discriminator.non_trainable_variables if "u" in v.name]
    assert spectral, "the discriminator has spectral-norm state"
    assert int(gan.optimizer.iterations.numpy()) == 2


def test_unknown_preset():
    with pytest.raises(ValueError, match="Choose one of"):
        presets.get("cifar100-svre")
