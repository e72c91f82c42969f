"""Latents drawn from (seed, version, index): the generator, the schedules, old files."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_svre
from keras_svre import latents
from tests.backend_helpers import BACKEND, batched, latent_bank, minibatches, numpy

pytestmark = pytest.mark.jax

N, LATENT, PIXELS = 12, 3, 4
DATA = pathlib.Path(__file__).parent / "data"
MASK = 0xFFFFFFFF


# A NumPy Threefry-2x32-20 and Box-Muller, written from the specification
# (Salmon et al., 2011), independently of the keras.ops version.
def numpy_threefry(key, counter):
    rotations = [13, 15, 26, 6, 17, 29, 16, 24]
    k = [int(key[0]), int(key[1])]
    k.append(k[0] ^ k[1] ^ 0x1BD11BDA)
    x = [(int(counter[0]) + k[0]) & MASK, (int(counter[1]) + k[1]) & MASK]
    for r in range(20):
        x[0] = (x[0] + x[1]) & MASK
        d = rotations[r % 8]
        x[1] = ((x[1] << d) | (x[1] >> (32 - d))) & MASK
        x[1] ^= x[0]
        if r % 4 == 3:
            s = r // 4 + 1
            x[0] = (x[0] + k[s % 3]) & MASK
            x[1] = (x[1] + k[(s + 1) % 3] + s) & MASK
    return x


def numpy_normal(seed, version, index, dim):
    out = np.zeros((len(index), dim))
    for row, k in enumerate(index):
        values = []
        for pair in range((dim + 1) // 2):
            a, b = numpy_threefry((seed & MASK, version), (k, pair))
            u1 = ((a >> 9) + 0.5) / 2.0**23
            u2 = ((b >> 9) + 0.5) / 2.0**23
            r = np.sqrt(-2.0 * np.log(u1))
            values += [r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)]
        out[row] = values[:dim]
    return out


def words(key, counter):
    u32 = [np.array([v], np.uint32) for v in (*key, *counter)]
    a, b = latents.threefry2x32(u32[:2], u32[2:])
    return int(numpy(a)[0]), int(numpy(b)[0])


@pytest.mark.parametrize(
    "key, counter, expected",
    [
        # Known-answer vectors of the Random123 reference implementation.
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((MASK, MASK), (MASK, MASK), (0x1CB996FC, 0xBB002BE7)),
        (
            (0x13198A2E, 0x03707344),
            (0x243F6A88, 0x85A308D3),
            (0xC4923A9C, 0x483DF7A0),
        ),
    ],
)
def test_threefry_known_answers(key, counter, expected):
    assert words(key, counter) == expected
    assert tuple(numpy_threefry(key, counter)) == expected


def test_normal_matches_numpy_and_depends_on_every_input():
    index = np.array([0, 5, 11, 100_000])
    got = numpy(latents.normal(2**32 + 7, 3, index, 5, "float64"))
    # float64 where the backend has it (JAX without x64 computes in float32).
    tolerance = 1e-12 if BACKEND == "tensorflow" else 2e-6
    np.testing.assert_allclose(
        got, numpy_normal(7, 3, index, 5), rtol=tolerance, atol=tolerance
    )
    base = numpy(latents.normal(7, 3, index, 5))
    for changed in (
        latents.normal(8, 3, index, 5),
        latents.normal(7, 4, index, 5),
        latents.normal(7, 3, index + 1, 5),
    ):
        assert not np.any(np.isclose(numpy(changed), base))


def test_normal_is_standard_normal():
    z = numpy(latents.normal(0, 1, np.arange(20_000), 8))
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1.0) < 0.02
    # Components uncorrelated (the cosine and sine halves of a pair too).
    correlation = np.corrcoef(z.T) - np.eye(8)
    assert np.max(np.abs(correlation)) < 0.04
    u = numpy(latents.uniform(0, 1, np.arange(20_000)))
    assert 0.0 < u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01


@pytest.mark.skipif(BACKEND != "tensorflow", reason="compares with a JAX subprocess")
def test_latents_identical_on_both_backends(tmp_path):
    """The integer words are equal bit for bit; the normals to float32 rounding."""
    pytest.importorskip("jax")
    script = (
        "import sys, numpy as np\n"
        "from keras import ops\n"
        "from keras_svre import latents\n"
        "index = np.arange(0, 4000, 7)\n"
        "c = ops.convert_to_tensor(index.astype(np.uint32))\n"
        "k = ops.convert_to_tensor(np.full(len(index), 9, np.uint32))\n"
        "a, b = latents.threefry2x32((k, k), (c, c))\n"
        "np.savez(sys.argv[1], a=ops.convert_to_numpy(a), b=ops.convert_to_numpy(b),\n"
        "         z=ops.convert_to_numpy(latents.normal(9, 2, index, 16)))\n"
    )
    results = {}
    for backend in ("tensorflow", "jax"):
        path = tmp_path / f"{backend}.npz"
        env = dict(os.environ, KERAS_BACKEND=backend)
        subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True)
        results[backend] = np.load(path)
    tf_result, jax_result = results["tensorflow"], results["jax"]
    np.testing.assert_array_equal(tf_result["a"], jax_result["a"])
    np.testing.assert_array_equal(tf_result["b"], jax_result["b"])
    np.testing.assert_allclose(tf_result["z"], jax_result["z"], rtol=2e-6, atol=2e-6)


def linear_gan(**kwargs):
    keras.utils.set_random_seed(0)
    generator = keras.Sequential(
        [keras.Input((LATENT,)), keras.layers.Dense(PIXELS)], name="g"
    )
    discriminator = keras.Sequential(
        [keras.Input((PIXELS,)), keras.layers.Dense(1)], name="d"
    )
    return keras_svre.GAN(generator, discriminator, num_examples=N, seed=3, **kwargs)


def images():
    return np.random.default_rng(1).normal(size=(N, PIXELS)).astype("float32")


def version(gan):
    return int(numpy(gan.latent_version))


def test_no_per_example_variable():
    small = linear_gan()
    keras.utils.set_random_seed(0)
    large = keras_svre.GAN(
        keras.Sequential([keras.Input((LATENT,)), keras.layers.Dense(PIXELS)]),
        keras.Sequential([keras.Input((PIXELS,)), keras.layers.Dense(1)]),
        num_examples=1_000_000,
        # Gradient penalties are TensorFlow-only for now.
        gradient_penalty="wgan-gp" if BACKEND == "tensorflow" else None,
    )
    assert sum(np.prod(v.shape) for v in large.weights) == sum(
        np.prod(v.shape) for v in small.weights
    )


def test_snapshots_advance_the_version_before_the_mean_gradient():
    """Per snapshot: mu_S is the exact mean of the F_i(w_S) the steps then use."""
    gan = linear_gan()
    x = images()
    gan.compile(optimizer=keras_svre.SVRE(0.1, restart_probability=1e-9))
    assert gan.latent_schedule == "per-snapshot"
    snapshot_data = batched((np.arange(N), x), 4)
    before = latent_bank(gan)
    gan.take_snapshot(snapshot_data)
    assert version(gan) == 1
    assert not np.allclose(latent_bank(gan), before)
    total = None
    for i in range(0, N, 4):
        batch = (np.arange(i, i + 4), x[i : i + 4])
        g, _ = gan.field(batch, gan.snapshot_point())
        g = [numpy(t) * 4 for t in g]
        total = g if total is None else [a + b for a, b in zip(total, g)]
    mean = [numpy(t) for t in gan.game_optimizers[0]._mean_gradients]
    for expected, got in zip(total, mean):
        np.testing.assert_allclose(got, expected / N, rtol=1e-5, atol=1e-7)
    gan.take_snapshot(snapshot_data)
    assert version(gan) == 2


def test_fixed_latents_never_change():
    gan = linear_gan(latents="fixed")
    gan.compile(optimizer=keras_svre.SVRE(0.1, restart_probability=0.9))
    before = latent_bank(gan)
    order = np.arange(N).reshape(-1, 2)
    gan.fit(
        minibatches((order, images()[order])),
        snapshot_data=batched((np.arange(N), images()), 6),
        epochs=2,
        verbose=0,
    )
    assert gan.snapshots_taken > 2
    assert version(gan) == 0
    np.testing.assert_array_equal(latent_bank(gan), before)


def test_other_methods_draw_new_latents_each_epoch():
    gan = linear_gan()
    gan.compile(optimizer=keras.optimizers.SGD(0.1))
    assert gan.latent_schedule == "per-epoch"
    order = np.arange(N).reshape(-1, 4)
    data = minibatches((order, images()[order]))
    seen = []
    for epoch in range(3):
        gan.fit(data, initial_epoch=epoch, epochs=epoch + 1, verbose=0)
        seen.append((version(gan), latent_bank(gan)))
    assert [v for v, _ in seen] == [0, 1, 2]
    assert not np.allclose(seen[1][1], seen[2][1])
    # A resumed epoch (fit from its number) draws that epoch's latents again.
    gan.fit(data, initial_epoch=1, epochs=2, verbose=0)
    np.testing.assert_array_equal(latent_bank(gan), seen[1][1])


def test_per_step_draws_fresh_latents_every_iteration():
    gan = linear_gan(latents="per-step")
    gan.compile(optimizer=keras.optimizers.SGD(0.1))
    first = latent_bank(gan)
    order = np.arange(4).reshape(1, 4)
    gan.fit(minibatches((order, images()[order])), verbose=0)
    assert gan.iterations == 1
    assert not np.allclose(latent_bank(gan), first)
    np.testing.assert_array_equal(
        latent_bank(gan), numpy(latents.normal(3, 1, np.arange(N), LATENT))
    )


def test_version_is_saved_and_restored(tmp_path):
    gan = linear_gan()
    gan.compile(optimizer=keras_svre.SVRE(0.1))
    gan.advance_latents(version=7)
    gan.save(tmp_path / "gan.keras")
    loaded = keras.models.load_model(tmp_path / "gan.keras")
    assert version(loaded) == 7 and loaded.latents_schedule == "auto"
    np.testing.assert_array_equal(latent_bank(loaded), latent_bank(gan))


def test_bad_schedule_names_the_choices():
    with pytest.raises(ValueError, match="`latents` must be one of .*per-snapshot"):
        linear_gan(latents="sometimes")


@pytest.mark.skipif(
    BACKEND != "tensorflow", reason="the old files were written on TensorFlow"
)
@pytest.mark.parametrize("name", ["gan_with_noise_bank", "gan_with_noise_bank_wgan_gp"])
def test_files_saved_with_a_noise_bank_load_and_train(name):
    """Files from before the stateless latents (tests/data, written by 5a2ccd8)."""
    saved = np.load(DATA / f"{name}.npz")
    gan = keras.models.load_model(DATA / f"{name}.keras")
    assert version(gan) == 0
    # The same weights in the same order, the banks dropped and the version
    # in the noise bank's place.
    old = [
        saved[f"w{i}"]
        for i, path in enumerate(saved["names"])
        if not path.endswith(("noise_bank", "interpolation_bank"))
    ]
    new = [numpy(v) for v in gan.weights if v is not gan.latent_version]
    assert len(old) == len(new)
    for a, b in zip(old, new):
        np.testing.assert_array_equal(a, b)
    x = images()
    before = [numpy(v) for v in gan.generator.trainable_variables]
    gan.fit(
        batched((np.arange(N), x), 4),
        snapshot_data=batched((np.arange(N), x), 6),
        verbose=0,
    )
    after = [numpy(v) for v in gan.generator.trainable_variables]
    assert all(np.all(np.isfinite(a)) for a in after)
    assert not all(np.array_equal(a, b) for a, b in zip(before, after))


def test_run_config_and_cli_choices():
    from keras_svre.run import ConfigError, RunConfig

    assert RunConfig(latents="per-epoch").latents == "per-epoch"
    with pytest.raises(ConfigError, match="unknown .*latents.*'every'; choose one of"):
        RunConfig(latents="every")
    with pytest.raises(ConfigError, match="choose one of extrapolated, opponent"):
        RunConfig(update_point="joint")
    with pytest.raises(ConfigError, match="does not extrapolate"):
        RunConfig(update_point="opponent-extrapolated", method="adam")
    config = RunConfig(update_point="opponent-extrapolated")
    assert json.loads(json.dumps(config.to_dict()))["update_point"] == (
        "opponent-extrapolated"
    )
