"""Invalid constructor arguments, one table over every game optimizer class.

Each message states the rule and the value received, as Keras' optimizers do.
Arguments of one class only (SVRE's restart probabilities) are tested with
that class (tests/test_svre.py).
"""

import re

import pytest

from keras_svre import SVRE, Extragradient, Optimistic

pytestmark = pytest.mark.jax

CLASSES = [Extragradient, SVRE, Optimistic]

INVALID = [
    (
        {"learning_rate": 0.0},
        "Argument `learning_rate` must be positive. Received: learning_rate=0.0.",
    ),
    (
        {"learning_rate": -1},
        "Argument `learning_rate` must be positive. Received: learning_rate=-1.",
    ),
    (
        {"learning_rate": -0.1},
        "Argument `learning_rate` must be positive. Received: learning_rate=-0.1.",
    ),
    (
        {"adaptive": "rmsprop"},
        "Argument `adaptive` must be None, 'adam' or 'vrad'. "
        "Received: adaptive='rmsprop'.",
    ),
    (
        {"adaptive": "adam", "beta_1": 1.0},
        "Argument `beta_1` must be in the [0, 1) range. Received: beta_1=1.0.",
    ),
    (
        {"beta_2": -0.1},
        "Argument `beta_2` must be in the [0, 1) range. Received: beta_2=-0.1.",
    ),
    (
        {"epsilon": -1e-8},
        "Argument `epsilon` must be >= 0. Received: epsilon=-1e-08.",
    ),
    (
        {"epsilon": -1e-3},
        "Argument `epsilon` must be >= 0. Received: epsilon=-0.001.",
    ),
    # Numbers given as strings (a config file's "0.9") are refused at once.
    (
        {"beta_1": "0.9"},
        "Argument `beta_1` must be a number in the [0, 1) range. "
        "Received: beta_1='0.9' (of type str).",
    ),
    (
        {"adaptive": "adam", "beta_2": "0.999"},
        "Argument `beta_2` must be a number in the [0, 1) range. "
        "Received: beta_2='0.999' (of type str).",
    ),
    (
        {"beta_1": True},
        "Argument `beta_1` must be a number in the [0, 1) range. "
        "Received: beta_1=True (of type bool).",
    ),
    (
        {"epsilon": "1e-8"},
        "Argument `epsilon` must be a number >= 0. "
        "Received: epsilon='1e-8' (of type str).",
    ),
    (
        {"learning_rate": "0.01"},
        "Argument `learning_rate` must be a positive number, a "
        "`LearningRateSchedule` or a callable. Received: learning_rate='0.01'.",
    ),
    (
        {"clipnorm": "1.0"},
        "Argument `clipnorm` must be a number (or None). "
        "Received: clipnorm='1.0' (of type str).",
    ),
    (
        {"clipvalue": "0.5"},
        "Argument `clipvalue` must be a number (or None). "
        "Received: clipvalue='0.5' (of type str).",
    ),
    (
        {"global_clipnorm": [1.0]},
        "Argument `global_clipnorm` must be a number (or None). "
        "Received: global_clipnorm=[1.0] (of type list).",
    ),
    (
        {"weight_decay": "1e-4"},
        "Argument `weight_decay` must be a number (or None). "
        "Received: weight_decay='1e-4' (of type str).",
    ),
]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    "arguments, message", INVALID, ids=[str(a) for a, _ in INVALID]
)
def test_invalid_argument(cls, arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cls(**arguments)
