"""Several devices on JAX through `keras.distribution.DataParallel`.

The game needs nothing of its own there: Keras' JAX trainer splits each
global batch over the devices and the jitted step computes the global-batch
field (one SPMD program), so K iterations on two devices equal K iterations
on one with the same global batches. The check runs on the CPU with two
host devices, in a subprocess (the device count is fixed when JAX starts):

    XLA_FLAGS=--xla_force_host_platform_device_count=2
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

pytestmark = [
    pytest.mark.jax,
    pytest.mark.skipif(
        keras.backend.backend() != "jax",
        reason="keras.distribution on JAX (KERAS_BACKEND=jax)",
    ),
]

_ONE_AND_TWO_DEVICES = """
import json
import jax
import keras
import numpy as np
import keras_svre

assert len(jax.devices()) == 2, jax.devices()


def train(distribution):
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    data = keras_svre.data.mnist_digits(
        batch_size=16, snapshot_batch_size=24, take=64, seed=0
    )
    # Batch normalisation: its statistics must be the global batch's.
    generator, discriminator = keras_svre.models.get_networks(
        "mnist_dcgan", latent_dim=8, width=2
    )
    gan = keras_svre.GAN(generator, discriminator, num_examples=64, seed=0)
    optimizer = keras_svre.SVRE(1e-3, adaptive="adam", restart_probability=0.5)
    gan.compile(optimizer=optimizer)
    gan.fit(data.train, snapshot_data=data.snapshot, epochs=2, verbose=0)
    # A snapshot pass whose minibatches (21) the two devices do not divide.
    index, images = data.snapshot.arrays
    odd = keras_svre.data.ArrayMinibatches((index, images), 21)
    mean = [np.asarray(g) for g in gan.snapshot_mean_gradient(odd)]
    weights = [np.asarray(v.value) for v in gan.variables]
    devices = len(gan.trainable_variables[0].value.sharding.device_set)
    counts = (gan.iterations, gan.snapshots_taken)
    keras.distribution.set_distribution(None)
    return weights, mean, devices, counts


one = train(None)
two = train(keras.distribution.DataParallel(devices=jax.devices()))
print(json.dumps({
    "devices": [one[2], two[2]],
    "counts": [one[3], two[3]],
    "weights": max(float(np.max(np.abs(a - b))) for a, b in zip(one[0], two[0])),
    "scale": max(float(np.max(np.abs(a))) for a in one[0]),
    "mean_gradient": max(
        float(np.max(np.abs(a - b))) for a, b in zip(one[1], two[1])
    ),
}))
"""


def test_data_parallel_on_two_devices_equals_one_device():
    flags = os.environ.get("XLA_FLAGS", "")
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2".strip(),
    }
    result = subprocess.run(
        [sys.executable, "-c", _ONE_AND_TWO_DEVICES],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # One device, then the variables replicated on both.
    assert report["devices"] == [1, 2]
    # 64 examples, 4 minibatches of 16 per epoch, 2 per SVRE iteration.
    assert report["counts"][0] == report["counts"][1]
    assert report["counts"][0][0] == 4
    # The same iterates, to float32 rounding (the global batch's mean
    # gradient is summed in another order across two devices).
    assert report["weights"] <= 1e-5 * max(1.0, report["scale"])
    assert report["mean_gradient"] <= 1e-5
    assert np.isfinite(report["weights"])
