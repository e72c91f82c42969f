"""Optional dependencies, imported where they are needed with one clear line if missing.

TensorFlow is optional on the JAX backend: `import keras_svre` and training
on NumPy minibatches need only Keras and JAX. What needs TensorFlow
(`tf.data`/TFDS pipelines, `tf.distribute`, the TensorBoard writer) imports
it through here.
"""

from __future__ import annotations

import importlib


def tensorflow(feature: str):
    """The `tensorflow` module, or an `ImportError` naming `feature` and the way out."""
    return require(
        "tensorflow",
        feature,
        'install TensorFlow (`pip install "keras-svre[tensorflow]"`), or on the '
        "JAX backend "
        "use NumPy data (`keras_svre.data.ArrayMinibatches`, "
        "`keras_svre.data.mnist_digits`)",
    )


def tensorflow_datasets(feature: str):
    """The `tensorflow_datasets` module, or an `ImportError` that says what to do."""
    return require(
        "tensorflow_datasets",
        feature,
        'install TensorFlow and TFDS (`pip install "keras-svre[tensorflow]"`), '
        "or on the JAX backend use NumPy data (`keras_svre.data.mnist_digits`, "
        "`keras_svre.data.from_arrays`)",
    )


def import_keras():
    """`keras`, or an `ImportError` in one line when its backend is not installed.

    Keras imports its backend (`KERAS_BACKEND`, TensorFlow by default) with
    itself; keras_svre leaves the backend to an extra of its own
    (`keras-svre[tensorflow]` or `keras-svre[jax]`).
    """
    try:
        import keras
    except ImportError as e:
        missing = (e.name or "").split(".")[0]
        if missing not in ("tensorflow", "jax", "jaxlib"):
            raise
        missing = "jax" if missing == "jaxlib" else missing
        other = "jax" if missing == "tensorflow" else "tensorflow"
        raise ImportError(
            f"Keras' backend `{missing}` (KERAS_BACKEND; TensorFlow by default) is "
            f'not installed: `pip install "keras-svre[{missing}]"`, or '
            f'`pip install "keras-svre[{other}]"` and KERAS_BACKEND={other}.'
        ) from None
    return keras


class LazyModule:
    """A module imported at its first attribute access (e.g. `tf.data`).

    A missing module raises the `ImportError` of `tensorflow(feature)`.
    """

    def __init__(self, name: str, feature: str):
        self._name = name
        self._feature = feature

    def __getattr__(self, attribute):
        if self._name == "tensorflow":
            module = tensorflow(self._feature)
        else:
            module = tensorflow_datasets(self._feature)
        return getattr(module, attribute)


def require(name: str, feature: str, remedy: str):
    """The module `name`, or an `ImportError`: "`feature` needs `name`, which
    is not installed: `remedy`." (one line)."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise ImportError(
            f"{feature} needs `{name}`, which is not installed: {remedy}."
        ) from e
