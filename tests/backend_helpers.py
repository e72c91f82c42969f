"""Data for tests that run on both backends: `tf.data` on TensorFlow, NumPy on JAX.

On TensorFlow the tests keep feeding the game `tf.data` datasets, as they
always did; on JAX they feed NumPy minibatches (`keras.utils.PyDataset`), the
path that needs no TensorFlow.
"""

import keras
import numpy as np

from keras_svre.data import ArrayMinibatches

BACKEND = keras.backend.backend()


class Rows(keras.utils.PyDataset):
    """Given minibatches, in order: element `i` is `structure`'s row `i` of each array."""

    def __init__(self, structure):
        super().__init__()
        self.structure = structure

    def __len__(self):
        return len(keras.tree.flatten(self.structure)[0])

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        return keras.tree.map_structure(lambda a: a[i], self.structure)


def minibatches(structure):
    """One minibatch per row of `structure` (an array or a tuple of arrays)."""
    structure = keras.tree.map_structure(np.asarray, structure)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(structure)
    return Rows(structure)


def batched(structure, batch_size):
    """`structure`'s examples in order, `batch_size` per minibatch (the last may be short)."""
    structure = keras.tree.map_structure(np.asarray, structure)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(structure).batch(batch_size)
    return ArrayMinibatches(structure, batch_size)


def components(n, batch_size):
    """The indices 0..n-1 in order, `batch_size` per minibatch (`Dataset.range` on TF)."""
    return batched(np.arange(n, dtype="int64"), batch_size)


def numpy(x):
    """A tensor, array or variable as a NumPy array."""
    return keras.ops.convert_to_numpy(x)


def latent_bank(gan):
    """A GAN's latent vectors for all its training examples, at its current version."""
    return numpy(gan.latents(np.arange(gan.num_examples)))


def interpolation_draws(gan):
    """A WGAN-GP GAN's interpolation coefficients for all its training examples."""
    from keras_svre import latents

    version = int(numpy(gan.latent_version))
    return numpy(
        latents.uniform(
            gan.seed, version, np.arange(gan.num_examples), gan._draw_dtype()
        )
    )
