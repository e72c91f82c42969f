"""keras_svre: stochastic variance-reduced extragradient (SVRE) for Keras 3.

SVRE (Chavdarova et al., NeurIPS 2019) trains GANs and other two-player games
with extragradient steps on a variance-reduced estimate of the game's vector
field. The pieces:

- `keras_svre.SVRE`, `keras_svre.Extragradient`, `keras_svre.Optimistic`:
  Keras optimizers holding the method's state (snapshot, mean gradient,
  previous step, Adam moments) as slot variables;
- `keras_svre.Game`: a `keras.Model` whose `train_step` runs the method for
  any game; `keras_svre.GAN` and `keras_svre.BilinearGame` are games;
- `keras_svre.data`, `keras_svre.models`, `keras_svre.metrics`,
  `keras_svre.callbacks`, `keras_svre.evaluation`: data through TFDS, the
  paper's networks, IS/FID, training and evaluation callbacks;
- `keras_svre.training`, `keras_svre.presets`: warm start, step-size decay
  and the paper's experiment configurations; `keras_svre.distribute`:
  strategies (Mirrored, MultiWorker, TPU).

Keras' TensorFlow and JAX backends are both supported (`KERAS_BACKEND`). On
JAX, TensorFlow is optional: what needs it (`distribute`, `evaluation`, the
`tf.data`/TFDS pipelines) is imported when first used.
"""

import importlib

from keras_svre._optional import import_keras

# One line saying what to install when Keras' backend is missing.
keras = import_keras()

from keras_svre import (  # noqa: E402
    callbacks,
    data,
    losses,
    metrics,
    models,
    optimizers,
    presets,
    training,
)
from keras_svre.bilinear import BilinearGame  # noqa: E402
from keras_svre.game import Game  # noqa: E402
from keras_svre.gan import GAN  # noqa: E402
from keras_svre.optimizers import SVRE, Extragradient, Optimistic  # noqa: E402

__version__ = "0.1.0"

# Modules that need TensorFlow: imported with the package on TensorFlow, on
# first use elsewhere.
_TENSORFLOW_MODULES = ("distribute", "evaluation")


def __getattr__(name):
    if name not in _TENSORFLOW_MODULES:
        raise AttributeError(f"module 'keras_svre' has no attribute {name!r}")
    from keras_svre import _optional

    _optional.tensorflow(f"`keras_svre.{name}`")
    return importlib.import_module(f"keras_svre.{name}")


if keras.backend.backend() == "tensorflow":
    from keras_svre import distribute

__all__ = [
    "GAN",
    "SVRE",
    "BilinearGame",
    "Extragradient",
    "Game",
    "Optimistic",
    "callbacks",
    "data",
    "distribute",
    "losses",
    "metrics",
    "models",
    "optimizers",
    "presets",
    "training",
]
