"""The NumPy data path: train and save a game with no `tf.data` (and on JAX, no TensorFlow).

This module imports no TensorFlow, so it runs in an environment without it:

    KERAS_BACKEND=jax pytest tests/test_numpy_data.py   # keras + jax, no tensorflow

`test_the_jax_path_imports_no_tensorflow` pins that the JAX path does not
import it even where it is installed.
"""

import importlib.util
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_svre

pytestmark = pytest.mark.jax


def test_array_minibatches_cover_every_example_once_and_reshuffle():
    data = keras_svre.data.ArrayMinibatches(np.arange(10), 4, shuffle=True, seed=1)
    assert len(data) == 3
    first = np.concatenate([data[i] for i in range(len(data))])
    np.testing.assert_array_equal(np.sort(first), np.arange(10))
    data.on_epoch_end()
    second = np.concatenate([data[i] for i in range(len(data))])
    assert not np.array_equal(first, second)
    dropped = keras_svre.data.ArrayMinibatches(np.arange(10), 4, drop_remainder=True)
    assert len(dropped) == 2 and len(dropped[1]) == 4
    with pytest.raises(ValueError, match="same length"):
        keras_svre.data.ArrayMinibatches((np.arange(3), np.arange(4)), 2)
    with pytest.raises(ValueError, match="batch_size"):
        keras_svre.data.ArrayMinibatches(np.arange(3), 0)


def test_bilinear_game_trains_on_numpy_minibatches():
    game = keras_svre.BilinearGame(dim=20, seed=0)
    start = game.distance_to_solution()
    game.compile(optimizer=keras_svre.SVRE(0.3, average_restart_probability=0.1))
    game.fit(game.component_minibatches(seed=0), epochs=150, verbose=0)
    assert game.averaged_distance() < 0.1 * start


def test_mnist_gan_trains_a_few_steps_and_saves(tmp_path):
    data = keras_svre.data.mnist_digits(batch_size=16, snapshot_batch_size=64, take=64)
    assert data.image_shape == (28, 28, 1) and data.num_examples == 64
    generator, discriminator = keras_svre.models.get_networks(
        "mnist_dcgan", latent_dim=8, width=4
    )
    gan = keras_svre.GAN(
        generator, discriminator, num_examples=data.num_examples, seed=0
    )
    gan.compile(optimizer=keras_svre.SVRE(1e-3, adaptive="adam"))
    history = gan.fit(data.train, snapshot_data=data.snapshot, epochs=2, verbose=0)
    assert gan.iterations == 4  # 4 minibatches per epoch, 2 per iteration.
    assert gan.snapshots_taken >= 1
    assert all(np.isfinite(history.history["generator_loss"]))
    samples = gan.generate(3, seed=0)
    assert samples.shape == (3, 28, 28, 1)
    path = tmp_path / "gan.keras"
    gan.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.generate(3, seed=0), samples, atol=1e-5)
    loaded.fit(data.train, snapshot_data=data.snapshot, epochs=1, verbose=0)
    assert loaded.iterations == 6


_WITHOUT_TENSORFLOW = """
import sys
import numpy as np
import keras_svre
game = keras_svre.BilinearGame(dim=4, seed=0)
game.compile(optimizer=keras_svre.SVRE(0.1))
game.fit(game.component_minibatches(), epochs=1, verbose=0)
keras_svre.data.ArrayMinibatches(np.arange(4), 2)
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
"""


@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="JAX is not installed"
)
def test_the_jax_path_imports_no_tensorflow():
    """Even where TensorFlow is installed, the JAX path does not import it."""
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_TENSORFLOW],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is not None
    or keras.backend.backend() != "jax",
    reason="the command line where TensorFlow is not installed (JAX backend)",
)
def test_the_command_line_trains_without_tensorflow(tmp_path, capsys, monkeypatch):
    """No TensorFlow: `train` saves its model and writes TensorBoard logs with
    tensorboardX; with no writer at all it leaves them out, saying so, and
    asking for them is a one-line error."""
    from keras_svre import cli, summaries
    from tests import tensorboard_helpers
    from tests.cli_helpers import TINY

    short = [*TINY, "--steps", "2", "--batch-size", "64", "--log-every", "1"]
    out = tmp_path / "run"
    assert cli.main(["train", *short, "--out", os.fspath(out)]) == 0
    assert (out / "model.keras").exists()
    events = tensorboard_helpers.events(out / "tensorboard")
    for tag in ("loss", "generator_loss", "discriminator_loss", "iterations"):
        assert sorted(events[tag]) == [1, 2], tag
    assert events["iterations"][2] == ("scalars", 2.0)
    plugin, (height, width, png) = events["samples/ema"][2]
    assert plugin == "images" and (height, width) == (240, 240)
    assert tensorboard_helpers.png_shape(png) == (240, 240)

    monkeypatch.setattr(summaries, "available", lambda: False)
    out = tmp_path / "run2"
    assert cli.main(["train", *short, "--out", os.fspath(out)]) == 0
    assert "no TensorBoard logs" in capsys.readouterr().out
    assert not (out / "tensorboard").exists()
    argv = ["train", *short, "--tensorboard", os.fspath(tmp_path / "tb")]
    assert cli.main([*argv, "--out", os.fspath(tmp_path / "run3")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "--tensorboard needs TensorFlow or tensorboardX" in err
    assert "Traceback" not in err
