"""TensorFlow and JAX train the paper's GAN (with BatchNorm) to the same weights.

The NumPy golden tests check each backend's step on games without BatchNorm.
Here the real networks (`mnist_dcgan`, BatchNorm in both players) train
plain SVRE with snapshots and per-snapshot latents (the version advancing
before each full pass), from the same weights on the same NumPy
minibatches, once in a TensorFlow process and once in a JAX process: the
weights must agree to float32 rounding, far below what the eight steps move
them. Plain steps, not Adam-type ones: Adam divides each gradient entry by
its own magnitude, so an entry that is a cancellation near 0 turns the two
backends' different float32 rounding into steps of the order of the step
size (measured: SVRE-VRAd runs from the same start part by 1e-4 in the
loss within five iterations), which would hide nothing and prove nothing.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

SCRIPT = """
import sys
import keras, numpy as np
import keras_svre
from keras_svre import data, models, optimizers

out, start = sys.argv[1], sys.argv[2]
keras.utils.set_random_seed(0)
generator, discriminator = models.get_networks("mnist_dcgan", width=2)
digits = data.mnist_digits(batch_size=20, snapshot_batch_size=100, take=200, seed=0)
gan = keras_svre.GAN(
    generator, discriminator, num_examples=digits.num_examples, seed=0
)
weights = gan.generator.weights + gan.discriminator.weights
if start == "-":
    np.savez(out, *[keras.ops.convert_to_numpy(v) for v in weights])
    sys.exit(0)
for variable, value in zip(weights, np.load(start).values()):
    variable.assign(value)
table = optimizers.method("svre")
gan.compile(optimizer=table.build(table.learning_rate, restart_probability=0.3))
gan.fit(digits.train, epochs=1, steps_per_epoch=8, snapshot_data=digits.snapshot,
        verbose=0)
assert int(gan.snapshots_taken) >= 2  # The first, and at least one restart.
assert int(gan.latent_version) == int(gan.snapshots_taken)
np.savez(out, *[keras.ops.convert_to_numpy(v) for v in weights])
"""


def _run(backend, out, start="-"):
    env = dict(os.environ, KERAS_BACKEND=backend)
    subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), str(start)], env=env, check=True
    )
    return list(np.load(out).values())


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="starts a JAX subprocess itself"
)
def test_svre_on_the_batchnorm_gan_gives_the_same_weights(tmp_path):
    pytest.importorskip("jax")
    start = tmp_path / "start.npz"
    _run("tensorflow", start)
    on_tensorflow = _run("tensorflow", tmp_path / "tf.npz", start)
    on_jax = _run("jax", tmp_path / "jax.npz", start)
    moved = max(
        np.max(np.abs(a - b))
        for a, b in zip(on_tensorflow, np.load(start).values(), strict=True)
    )
    assert moved > 5e-3  # Eight iterations really moved the weights.
    for a, b in zip(on_tensorflow, on_jax, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)
