"""Helpers shared by the command-line tests, which run on both backends."""

import keras
import pytest

from keras_svre import cli

BACKEND = keras.backend.backend()

# What exists on the TensorFlow backend only (tf.distribute, TFDS datasets,
# TensorFlow's op determinism): the command line refuses it on JAX.
tensorflow_only = pytest.mark.skipif(
    BACKEND != "tensorflow", reason="a TensorFlow-only feature of the command line"
)

# A tiny run: 256 examples, width-4 networks, no final evaluation, silent;
# plain SVRE from the first iteration (the default run warm-starts with Adam).
TINY = ["--take", "256", "--width", "4", "--no-evaluate", "--verbose", "0"]
TINY += ["--method", "svre", "--warm-start-method", "none"]


def fails_cleanly(capsys, argv, message):
    """Runs the CLI; checks exit code 2, `message` on stderr, no traceback."""
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    return err
