"""Helpers shared by the optimizer tests (float64 variables, tight checks)."""

import copy

import keras
import numpy as np

RTOL = 1e-12
ATOL = 1e-15


def f32(value):
    """A Python float rounded as Keras stores the learning rate (float32)."""
    return float(np.float32(value))


def variable(values):
    return keras.Variable(np.array(values, dtype="float64"))


def assert_close(actual, expected):
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(actual), expected, rtol=RTOL, atol=ATOL
    )


def apply_in_game_step(optimizer, grads, variables):
    """One update, as a `keras_svre.Game` train step makes it."""
    optimizer.apply_direction([np.asarray(g, "float64") for g in grads], variables)


def assert_round_trip(optimizer):
    config = optimizer.get_config()
    # A copy: Keras' `from_config` deserialises a schedule in place.
    restored = type(optimizer).from_config(copy.deepcopy(config))
    assert type(restored) is type(optimizer)
    assert restored.get_config() == config

    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"] == f"keras_svre>{type(optimizer).__name__}"
    deserialized = keras.optimizers.deserialize(serialized)
    assert type(deserialized) is type(optimizer)
    assert deserialized.get_config() == config
    # Also through `keras.optimizers.get`, which `Model.compile` uses.
    assert keras.optimizers.get(serialized).get_config() == config
    return config
