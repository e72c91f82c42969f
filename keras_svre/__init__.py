"""keras_svre: stochastic variance-reduced extragradient (SVRE) for Keras 3."""

from keras_svre import optimizers
from keras_svre.bilinear import BilinearGame
from keras_svre.game import Game, SnapshotSchedule
from keras_svre.optimizers import SVRE, Extragradient

__version__ = "0.1.0"

__all__ = [
    "SVRE",
    "BilinearGame",
    "Extragradient",
    "Game",
    "SnapshotSchedule",
    "optimizers",
]
