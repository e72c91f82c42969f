"""What differs between the backends on the command line, and runs that move
between them (the command line's own tests, tests/test_cli.py and
tests/test_cli_outputs.py, run on both).

    KERAS_BACKEND=jax pytest tests/test_cli_jax.py

On JAX the command line trains on the NumPy minibatches of the offline
digits (no TensorFlow needed) and refuses TensorFlow-only options in one
line. A saved GAN loads under the other backend (checked in a subprocess
where both are installed), on either side.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_svre
from keras_svre import cli
from tests.cli_helpers import TINY, fails_cleanly

pytestmark = pytest.mark.jax

BACKEND = keras.backend.backend()
OTHER = {"jax": "tensorflow", "tensorflow": "jax"}[BACKEND]
on_jax = pytest.mark.skipif(
    BACKEND != "jax", reason="the JAX backend's command line (KERAS_BACKEND=jax)"
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    """A two-iteration SVRE run (one epoch of 4 batches of 64) on this backend."""
    out = tmp_path_factory.mktemp("run")
    argv = ["train", *TINY, "--steps", "2", "--batch-size", "64"]
    if BACKEND == "tensorflow":
        argv += ["--data-dir", request.getfixturevalue("data_dir")]
    assert cli.main([*argv, "--out", os.fspath(out)]) == 0
    return out


@on_jax
def test_the_offline_digits_are_numpy_minibatches_on_jax():
    finite_sum = keras_svre.data.load(batch_size=16, snapshot_batch_size=40, take=64)
    train = finite_sum.train
    assert isinstance(train, keras_svre.data.ArrayMinibatches)
    assert len(train) == 4 and finite_sum.num_examples == 64
    assert len(finite_sum.snapshot) == 2  # 40 + 24: every example once
    # A resumed epoch skips the minibatches it already used, in its order.
    skipped = train.skip(3)
    assert len(skipped) == 1
    np.testing.assert_array_equal(skipped[0][0], train[3][0])
    with pytest.raises(ValueError, match="leave `image_size` unset"):
        keras_svre.data.load(image_size=32)


_LOAD_AND_GENERATE = """
import sys
import keras
import numpy as np
import keras_svre
gan = keras.models.load_model(sys.argv[1])
assert keras.backend.backend() == sys.argv[3], keras.backend.backend()
np.save(sys.argv[2], gan.generate(4, which="current", seed=0))
print(gan.iterations, type(gan.optimizer).__name__)
"""


@pytest.mark.skipif(
    importlib.util.find_spec(OTHER) is None, reason=f"{OTHER} is not installed"
)
def test_a_saved_gan_loads_on_the_other_backend(trained, tmp_path):
    images = tmp_path / "images.npy"
    model = os.fspath(trained / "model.keras")
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_GENERATE, model, images, OTHER],
        env={**os.environ, "KERAS_BACKEND": OTHER},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["2", "SVRE"]
    here = keras.models.load_model(model).generate(4, which="current", seed=0)
    # The same weights and noise give the same images, to float32 rounding.
    np.testing.assert_allclose(np.load(images), here, atol=1e-4)


@on_jax
@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--strategy", "mirrored"],
            "--strategy mirrored is TensorFlow's tf.distribute; on the jax backend "
            "train on several devices with keras.distribution",
        ),
        (["--deterministic"], "XLA_FLAGS=--xla_gpu_deterministic_ops=true"),
        (
            ["--gradient-noise-every", "4"],
            "--gradient-noise-every measures on a tf.data pipeline in a "
            "tf.function, which the jax backend cannot run",
        ),
    ],
)
def test_tensorflow_only_options_are_refused_on_jax(capsys, tmp_path, extra, message):
    argv = ["train", *TINY, *extra, "--out", os.fspath(tmp_path / "run")]
    fails_cleanly(capsys, argv, message)
    assert not (tmp_path / "run").exists()


def test_a_run_resumes_only_on_its_own_backend(capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    settings = {**keras_svre.run.RunConfig().to_dict(), "backend": OTHER}
    (out / "run.json").write_text(json.dumps(settings))
    argv = ["train", "--resume", "--out", os.fspath(out)]
    fails_cleanly(
        capsys,
        argv,
        f"was trained on the {OTHER} backend, and its data order is that "
        f"backend's: resume it with KERAS_BACKEND={OTHER}",
    )


@on_jax
def test_a_missing_optional_dependency_is_one_line(capsys, tmp_path, monkeypatch):
    # As if TFDS / TensorFlow were not installed (an import of None fails).
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    argv = ["train", *TINY, "--dataset", "mnist", "--out", os.fspath(tmp_path / "r")]
    fails_cleanly(
        capsys,
        argv,
        # `tensorflow` where TensorFlow itself is missing.
        "The dataset 'mnist' (read through TFDS and tf.data) needs `tensorflow",
    )
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    argv = ["export", "--model", "x.keras", "--format", "savedmodel"]
    (tmp_path / "x.keras").write_text("")
    monkeypatch.chdir(tmp_path)
    fails_cleanly(
        capsys,
        [*argv, "--out", "saved"],
        "--format savedmodel needs `tensorflow`, which is not installed: install "
        "TensorFlow, or write a .keras file with --format keras",
    )
