"""Standalone generators: `GAN.generator_model`, `keras-svre export`, and
`keras-svre sample --grid/--png-dir`."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from PIL import Image

import keras_svre
from keras_svre import cli, models
from keras_svre.cli import saved_model
from tests.cli_helpers import TINY, fails_cleanly


@pytest.fixture(scope="module")
def model_file(data_dir, tmp_path_factory):
    """The model.keras of a two-iteration SVRE run on 28x28 digits."""
    out = tmp_path_factory.mktemp("run")
    argv = ["train", *TINY, "--steps", "2", "--batch-size", "64"]
    assert cli.main([*argv, "--data-dir", data_dir, "--out", os.fspath(out)]) == 0
    return out / "model.keras"


@pytest.fixture(scope="module")
def gan(model_file):
    return keras.models.load_model(model_file)


@pytest.fixture
def latents(gan):
    return np.random.default_rng(7).standard_normal((5, gan.latent_dim)).astype("f4")


@pytest.mark.parametrize("which", ["ema", "average", "current", None])
def test_generator_model_computes_what_generate_does(gan, latents, which):
    model = gan.generator_model(which)
    assert isinstance(model, keras.Model)
    np.testing.assert_allclose(
        model(latents, training=False), gan.generate(latents, which=which), atol=1e-5
    )


def test_the_generators_of_the_run_differ(gan, latents):
    # Otherwise the test above could not tell them apart.
    ema, average, current = (gan.generate(latents, which=w) for w in cli.WHICH[1:])
    assert not np.allclose(ema, average) and not np.allclose(average, current)


def test_generator_model_shares_no_variables_with_the_gan(gan, latents):
    before = gan.generate(latents, which="current")
    model = gan.generator_model("current")
    assert not {id(v) for v in model.weights} & {id(v) for v in gan.weights}
    for variable in model.weights:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    np.testing.assert_array_equal(gan.generate(latents, which="current"), before)


def test_generator_model_refuses_an_unknown_generator(gan):
    message = r"must be one of \('ema', 'average', 'current'\).*which='best'"
    with pytest.raises(ValueError, match=message):
        gan.generator_model("best")


def test_a_generator_with_keras_svre_layers_needs_keras_svre(tmp_path, capsys):
    generator, discriminator = models.get_networks("dcgan32", latent_dim=8, width=2)
    gan = keras_svre.GAN(generator, discriminator, num_examples=4, seed=0)
    latents = np.random.default_rng(0).standard_normal((3, 8)).astype("float32")
    model = gan.generator_model("current")
    np.testing.assert_allclose(
        model(latents, training=False), gan.generate(latents), atol=1e-5
    )
    # What holds: a .keras file of this generator names keras_svre's layer,
    # so loading it needs `import keras_svre`, and `export` says so.
    assert saved_model.custom_classes(model) == ["keras_svre>SpectralNorm"]
    gan.save(tmp_path / "gan.keras")
    argv = ["export", "--model", os.fspath(tmp_path / "gan.keras")]
    assert cli.main([*argv, "--out", os.fspath(tmp_path / "generator.keras")]) == 0
    err = capsys.readouterr().err
    assert "uses classes defined outside Keras (keras_svre>SpectralNorm)" in err


# Run in a process that never imports keras_svre (nor can: no PYTHONPATH, and
# another working folder; an installed copy would show in sys.modules).
_LOAD_WITHOUT_KERAS_SVRE = """
import sys
import keras, numpy as np, tensorflow as tf
latents = np.load("latents.npy")
model = keras.saving.load_model("generator.keras")
np.save("from_keras.npy", model(latents, training=False))
serving = tf.saved_model.load("generator_savedmodel").signatures["serving_default"]
inputs = serving.structured_input_signature[1]
assert list(inputs) == ["latent"], inputs
assert inputs["latent"].shape.as_list() == [None, latents.shape[1]], inputs
assert inputs["latent"].dtype == tf.float32, inputs
outputs = serving(latent=tf.constant(latents))
assert list(outputs) == ["image"], outputs
np.save("from_savedmodel.npy", outputs["image"])
assert not [m for m in sys.modules if m.startswith("keras_svre")]
"""


def test_export_loads_without_keras_svre(model_file, gan, latents, tmp_path, capsys):
    export = ["export", "--model", os.fspath(model_file)]
    keras_file = tmp_path / "generator.keras"
    # --which best (the default): the model's default_generator, the EMA
    # here (the run was not evaluated).
    assert cli.main([*export, "--out", os.fspath(keras_file)]) == 0
    printed = capsys.readouterr()
    assert (
        "the ema generator (the model's default generator; no evaluation of this "
        "model chose it" in printed.out
    )
    # mnist_dcgan is made of Keras' own layers: nothing else to import.
    assert "note:" not in printed.err
    saved_model = tmp_path / "generator_savedmodel"
    savedmodel = [*export, "--format", "savedmodel", "--out", os.fspath(saved_model)]
    assert cli.main([*savedmodel, "--which", "current"]) == 0
    # --overwrite replaces a SavedModel with another.
    assert cli.main([*savedmodel, "--which", "average", "--overwrite"]) == 0
    assert not list(tmp_path.glob(".partial-*")) + list(tmp_path.glob(".old-*"))
    np.save(tmp_path / "latents.npy", latents)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = textwrap.dedent(_LOAD_WITHOUT_KERAS_SVRE)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_allclose(
        np.load(tmp_path / "from_keras.npy"), gan.generate(latents), atol=1e-5
    )
    np.testing.assert_allclose(
        np.load(tmp_path / "from_savedmodel.npy"),
        gan.generate(latents, which="average"),
        atol=1e-5,
    )


def test_export_overwrites_a_keras_file_only_when_asked(model_file, tmp_path, capsys):
    out = tmp_path / "generator.keras"
    out.write_text("an older file")
    argv = ["export", "--model", os.fspath(model_file), "--out", os.fspath(out)]
    fails_cleanly(capsys, argv, f"--out {out} already exists")
    assert out.read_text() == "an older file"
    assert cli.main([*argv, "--which", "current", "--overwrite"]) == 0
    assert isinstance(keras.saving.load_model(out), keras.Model)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--which", "last"], "unknown --which 'last'; choose one of best, ema"),
        (["--format", "onnx"], "unknown --format 'onnx'; choose one of keras"),
        (["--out", "generator.h5"], "give --out a name ending in .keras"),
        (["--out", "folder.keras"], "--out folder.keras already exists"),
        (["--out", "folder.keras", "--overwrite"], "is a folder; --format keras"),
        (["--out", "folder", "--format", "savedmodel"], "--out folder already exists"),
        (
            ["--out", "folder", "--format", "savedmodel", "--overwrite"],
            "--out folder is not a SavedModel folder, and --overwrite replaces only",
        ),
    ],
)
def test_bad_export_arguments_exit_2(
    model_file, capsys, monkeypatch, tmp_path, extra, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder.keras").mkdir()
    (tmp_path / "folder").mkdir()
    argv = ["export", "--model", os.fspath(model_file), "--out", "g.keras", *extra]
    fails_cleanly(capsys, argv, message)
    assert sorted(os.listdir(tmp_path)) == ["folder", "folder.keras"]


def test_export_needs_a_model_file(capsys, tmp_path):
    argv = ["export", "--model", "no/such.keras", "--out", os.fspath(tmp_path / "g")]
    fails_cleanly(capsys, [*argv, "--format", "savedmodel"], "no such model file")


def test_sample_writes_a_grid_and_png_files(model_file, tmp_path, capsys):
    npy, grid, png_dir = tmp_path / "s.npy", tmp_path / "grid.png", tmp_path / "png"
    argv = ["sample", "--model", os.fspath(model_file), "--num", "12"]
    argv += ["--out", os.fspath(npy), "--grid", os.fspath(grid)]
    assert cli.main([*argv, "--png-dir", os.fspath(png_dir)]) == 0
    assert "12 PNG files in" in capsys.readouterr().out
    images = np.load(npy)
    # The grid: 4 x 3 images of 28x28 with a 2-pixel border each.
    assert np.asarray(Image.open(grid)).shape[:2] == (3 * 30, 4 * 30)
    files = sorted(png_dir.iterdir())
    assert [f.name for f in files] == [f"{k:02d}.png" for k in range(12)]
    first = Image.open(files[0])
    assert first.mode == "L" and first.size == (28, 28)
    pixels = np.stack([np.asarray(Image.open(f)) for f in files])
    np.testing.assert_array_equal(pixels, np.round(images[..., 0] * 255))


def test_sample_refuses_to_mix_with_earlier_png_files(model_file, tmp_path, capsys):
    (tmp_path / "0.png").write_bytes(b"")
    argv = [
        "sample",
        "--model",
        os.fspath(model_file),
        "--png-dir",
        os.fspath(tmp_path),
    ]
    fails_cleanly(capsys, argv, "already holds PNG files")


@pytest.mark.parametrize(
    "outputs, message",
    [
        ([], "nothing to write: give --out FILE.npy, --grid FILE.png"),
        (["--grid", "samples.jpg"], "--grid samples.jpg must be a .png file name"),
    ],
)
def test_bad_sample_outputs_exit_2(model_file, capsys, outputs, message):
    fails_cleanly(
        capsys, ["sample", "--model", os.fspath(model_file), *outputs], message
    )
