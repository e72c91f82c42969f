"""The per-backend half of the `Game`: its train step and what it runs on.

As Keras splits `keras.Model` into a backend-neutral `Trainer` and a trainer
per backend (keras/src/backend/{tensorflow,jax}/trainer.py), the game's
method (players, losses, compile, one iteration of the method written in
`keras.ops`) is backend-neutral (`keras_svre.game.core`) and each backend
supplies how the game's vector field is differentiated, how an iteration is
applied or skipped, the snapshot pass and the train/test step Keras calls:

- `tensorflow.TensorFlowGameTrainer`: a `tf.GradientTape` per evaluation, the
  step inside Keras' `tf.function`, `tf.distribute` strategies;
- `jax.JAXGameTrainer`: a pure, jitted step of the state (trainable,
  non-trainable, optimizer and metric variables) and the data, `jax.vjp` per
  evaluation, `keras.distribution` for several devices.

`GameTrainer` is the one for the backend Keras runs on.
"""

import keras

_BACKEND = keras.backend.backend()

if _BACKEND == "tensorflow":
    from keras_svre.game.backend.tensorflow import TensorFlowGameTrainer as GameTrainer
    from keras_svre.game.backend.tensorflow import (
        checked_rows,
        compile_function,
        trace,
    )
elif _BACKEND == "jax":
    from keras_svre.game.backend.jax import JAXGameTrainer as GameTrainer
    from keras_svre.game.backend.jax import (
        checked_rows,
        compile_function,
        trace,
    )
else:
    raise ImportError(
        f"keras_svre runs on the TensorFlow and JAX backends of Keras, not on "
        f"{_BACKEND!r}: set KERAS_BACKEND=tensorflow or KERAS_BACKEND=jax."
    )

__all__ = [
    "GameTrainer",
    "checked_rows",
    "compile_function",
    "trace",
]
