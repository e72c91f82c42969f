"""`keras-svre train` on the JAX backend, and runs that move between backends.

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
def test_train_on_jax_records_the_backend_and_saves_the_gan(trained):
    summary = json.loads((trained / "metrics.json").read_text())
    assert summary["backend"] == "jax"
    assert summary["iterations"] == 2 and summary["snapshots"] >= 1
    assert summary["minibatch_evaluations"] == 8 + 4 * summary["snapshots"]
    assert np.isfinite(summary["final_losses"]["generator_loss"])
    assert json.loads((trained / "run.json").read_text())["backend"] == "jax"
    gan = keras.models.load_model(trained / "model.keras")
    assert isinstance(gan, keras_svre.GAN) and gan.iterations == 2
    assert isinstance(gan.optimizer, keras_svre.SVRE)


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
            ["--method", "adam", "--n-dis", "2"],
            "--n-dis runs on Keras' TensorFlow backend only for now; this is the "
            "jax backend",
        ),
        (
            ["--gradient-penalty", "r1"],
            "--gradient-penalty runs on Keras' TensorFlow backend only for now",
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


@on_jax
def test_tensorflow_only_game_options_are_refused_on_jax_in_python():
    """Alternating updates and gradient penalties: one line naming the backend."""
    game = keras_svre.BilinearGame(dim=4, dtype="float32")
    with pytest.raises(ValueError, match="TensorFlow backend only for now"):
        game.compile(
            x_optimizer=keras.optimizers.SGD(0.1),
            y_optimizer=keras.optimizers.SGD(0.1),
            n_dis=2,
        )
    generator, discriminator = keras_svre.models.get_networks("mnist_dcgan", width=2)
    with pytest.raises(ValueError, match="TensorFlow backend only for now"):
        keras_svre.GAN(generator, discriminator, num_examples=8, gradient_penalty="r1")
