"""Tests for keras_svre/data/folder.py: training on a folder of your own images.

On both backends: the images are decoded by Pillow everywhere, and come as
`tf.data` pipelines on TensorFlow, NumPy minibatches on JAX.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from keras_svre import cli, data
from keras_svre.data import folder as folder_lib
from keras_svre.game import data as game_data
from tests.cli_helpers import TINY, fails_cleanly

pytestmark = pytest.mark.jax

SIZE = (6, 8)  # (height, width) of the generated images.
ON_TENSORFLOW = keras.backend.backend() == "tensorflow"


def _save(path, pixels, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(path, **kwargs)


def _gray_folder(root, count=12):
    """`count` constant grayscale images, image k of value 20 k; 1 and 3 in sub/."""
    names = [
        f"sub/img_{k:02d}.png" if k in (1, 3) else f"img_{k:02d}.png"
        for k in range(count)
    ]
    # Written in reverse: the order is the sorted paths', not the disk's.
    for k in reversed(range(count)):
        _save(root / names[k], np.full(SIZE, min(20 * k, 255)))
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(b"not an image either, but hidden")
    return sorted(names)


def _collect(dataset):
    """One pass of a `tf.data` pipeline or of `ArrayMinibatches`, as NumPy."""
    indices, images = zip(*game_data.iterate(dataset), strict=True)
    return np.concatenate(indices), np.concatenate(images)


def _value_of(name):
    return min(20 * int(name[-6:-4]), 255)


def test_load_gives_indexed_images_in_sorted_order(tmp_path):
    names = _gray_folder(tmp_path / "images")
    assert data.image_files(tmp_path / "images") == names
    assert names[-2:] == ["sub/img_01.png", "sub/img_03.png"]
    loaded = data.load(
        f"folder:{tmp_path / 'images'}",
        batch_size=4,
        snapshot_batch_size=5,
        data_dir=tmp_path / "cache",
    )
    assert loaded.name == f"folder:{tmp_path / 'images'}"
    assert (loaded.num_examples, loaded.image_shape) == (12, (*SIZE, 1))
    assert loaded.batches_per_epoch == 3
    indices, images = _collect(loaded.snapshot)
    np.testing.assert_array_equal(indices, np.arange(12))
    expected = np.array([_value_of(n) for n in names]) / 127.5 - 1.0
    np.testing.assert_allclose(images[:, 0, 0, 0], expected, atol=1e-6)
    assert images.min() == -1.0 and images.max() <= 1.0
    # Training batches are shuffled, each image still with its own index.
    indices, images = _collect(loaded.train)
    assert sorted(indices) == list(range(12)) and list(indices) != list(range(12))
    np.testing.assert_allclose(images[:, 0, 0, 0], expected[indices], atol=1e-6)


def test_formats_channels_centre_crop_and_resize(tmp_path):
    root = tmp_path / "mixed"
    wide = np.zeros((20, 40, 3))
    wide[:, 10:30] = (0, 200, 0)  # Green centre, black sides.
    _save(root / "a_wide.png", wide)
    _save(root / "b_gray.jpg", np.full((16, 16), 100), quality=100)
    _save(root / "c_rgba.png", np.dstack([np.full((9, 9, 3), 50), np.zeros((9, 9))]))
    _save(root / "d_gray.bmp", np.full((7, 5), 30))
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 255)]
    frames[0].save(root / "e_anim.GIF", save_all=True, append_images=frames[1:])
    colour = data.from_folder(
        root, image_size=4, channels=3, batch_size=5, data_dir=tmp_path
    )
    assert colour.image_shape == (4, 4, 3)
    _, images = _collect(colour.snapshot)
    pixels = np.round((images + 1.0) * 127.5)
    # The wide image's sides are cropped away: all green.
    np.testing.assert_array_equal(pixels[0].reshape(-1, 3), [[0, 200, 0]] * 16)
    np.testing.assert_allclose(pixels[1], 100, atol=2)  # gray -> 3 equal channels
    np.testing.assert_array_equal(pixels[2], 50)  # alpha dropped
    np.testing.assert_array_equal(pixels[3], 30)
    np.testing.assert_array_equal(pixels[4], 0)  # the GIF's first frame
    gray = data.from_folder(
        root, image_size=(3, 5), channels=1, batch_size=5, data_dir=tmp_path
    )
    assert gray.image_shape == (3, 5, 1)


def test_pillow_modes_decode_to_gray_or_colour(tmp_path):
    root = tmp_path / "modes"
    root.mkdir()
    gray = np.full((4, 4), 90, np.uint8)
    Image.fromarray(gray > 0).save(root / "a_bilevel.png")  # "1": 0 or 255
    Image.fromarray(np.dstack([gray, np.zeros_like(gray)]), "LA").save(root / "b.png")
    # 16 bits: 40000 = 156 * 256 + 64 keeps its high byte.
    Image.fromarray(np.full((4, 4), 40000, np.uint16)).save(root / "c_16bit.png")
    palette = Image.fromarray(np.ones((4, 4), np.uint8), "P")
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette.save(root / "d_palette.png", transparency=1)  # tRNS: alpha dropped
    palette.save(root / "e_palette.gif")
    Image.fromarray(np.full((4, 4, 4), (0, 255, 0, 0), np.uint8), "CMYK").save(
        root / "f_cmyk.jpg", quality=100
    )
    loaded = data.from_folder(root, channels=3, batch_size=6, data_dir=tmp_path)
    _, images = _collect(loaded.snapshot)
    pixels = np.round((images + 1.0) * 127.5)[:, 0, 0]
    expected = [[255] * 3, [90] * 3, [156] * 3, [10, 20, 30], [10, 20, 30]]
    np.testing.assert_array_equal(pixels[:5], expected)
    np.testing.assert_allclose(pixels[5], [255, 0, 255], atol=2)  # magenta
    # As they are: the first three are grayscale, the others colour.
    with pytest.raises(ValueError, match=r"\(grayscale: 3, colour: 3; e\.g\."):
        data.from_folder(root, batch_size=6, data_dir=tmp_path)


def test_grayscale_and_resize_golden_values(tmp_path):
    root = tmp_path / "golden"
    # Columns 0, 0, 255, 255 in colour (r, g, b) = (100, 50, 200) * column.
    ramp = np.zeros((4, 4, 3), np.uint8)
    ramp[:, 2:] = (100, 50, 200)
    _save(root / "ramp.png", ramp)
    _save(root / "white.png", np.full((4, 4, 3), 255))
    gray = data.from_folder(root, channels=1, batch_size=2, data_dir=tmp_path)
    _, images = _collect(gray.snapshot)
    # ITU-R 601: 0.2989 * 100 + 0.5870 * 50 + 0.1140 * 200 = 81.54 -> 82; and
    # (0.2989 + 0.5870 + 0.1140) * 255 = 254.97 -> 255.
    np.testing.assert_array_equal(
        np.round((images[..., 0] + 1.0) * 127.5),
        [np.tile([0, 0, 82, 82], (4, 1))] + [np.full((4, 4), 255)],
    )
    halved = data.from_folder(
        root, image_size=2, channels=1, batch_size=2, data_dir=tmp_path
    )
    _, images = _collect(halved.snapshot)
    # Antialiased bilinear at scale 1/2: a triangle of half-width 2 input
    # pixels; output column 0 (centre 1.0) weighs the input pixels centred at
    # 0.5, 1.5, 2.5 by 0.75, 0.75, 0.25 (normalised by their sum, 1.75).
    left = 82 * 0.25 / 1.75
    expected = np.round([left, 82 - left])
    np.testing.assert_array_equal(
        np.round((images[0, ..., 0] + 1.0) * 127.5), [expected, expected]
    )


def test_backend_pipelines_and_their_shuffle_buffer(tmp_path):
    root = tmp_path / "images"
    _gray_folder(root)
    arguments = {"batch_size": 4, "data_dir": tmp_path / "cache"}
    loaded = data.from_folder(root, shuffle_buffer_size=12, **arguments)
    if ON_TENSORFLOW:
        import tensorflow as tf

        assert isinstance(loaded.train, tf.data.Dataset)
        data.from_folder(root, shuffle_buffer_size=3, **arguments)
        return
    assert isinstance(loaded.train, data.ArrayMinibatches)
    assert isinstance(loaded.snapshot, data.ArrayMinibatches)
    # The first 5 images need a buffer of 5 only.
    data.from_folder(root, shuffle_buffer_size=5, take=5, **arguments)
    with pytest.raises(ValueError) as error:
        data.from_folder(root, shuffle_buffer_size=11, **arguments)
    assert str(error.value) == (
        "Argument `shuffle_buffer_size` must be None or at least the number of "
        "images (12) off the TensorFlow backend, whose NumPy minibatches permute "
        "all the images each epoch: leave it unset. Received: "
        "shuffle_buffer_size=11."
    )


_LOAD_WITHOUT_TENSORFLOW = """
import sys
from keras_svre import data
loaded = data.load(sys.argv[1], batch_size=4, data_dir=sys.argv[2], image_size=3)
assert isinstance(loaded.train, data.ArrayMinibatches), type(loaded.train)
assert loaded.image_shape == (3, 3, 1) and loaded.num_examples == 12
assert "tensorflow" not in sys.modules, "TensorFlow was imported"
"""


@pytest.mark.skipif(
    importlib.util.find_spec("jax") is None, reason="JAX is not installed"
)
def test_a_folder_on_jax_imports_no_tensorflow(tmp_path):
    """Even where TensorFlow is installed, JAX's folder path does not import it."""
    _gray_folder(tmp_path / "images")
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_TENSORFLOW]
        + [f"folder:{tmp_path / 'images'}", os.fspath(tmp_path / "cache")],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_second_load_decodes_nothing(tmp_path, monkeypatch):
    root, cache = tmp_path / "images", tmp_path / "cache"
    _gray_folder(root)
    decoded = []
    prepare_one = folder_lib._prepare_one

    def counting(file, *args):
        decoded.append(file)
        return prepare_one(file, *args)

    monkeypatch.setattr(folder_lib, "_prepare_one", counting)

    def load(**kwargs):
        loaded = data.from_folder(root, batch_size=4, data_dir=cache, **kwargs)
        return _collect(loaded.snapshot)[1]

    first = load()
    assert len(decoded) == 12
    (cached,) = (cache / folder_lib.CACHE_FOLDER).glob("*.npz")
    np.testing.assert_array_equal(load(), first)
    assert len(decoded) == 12
    # A changed file, or another target, is prepared again; the stale array of
    # the same target is replaced.
    _save(root / "img_00.png", np.full((6, 8), 7))
    assert load()[0, 0, 0, 0] == pytest.approx(7 / 127.5 - 1.0)
    assert len(decoded) == 24
    load(image_size=3)
    assert len(decoded) == 36
    assert not cached.exists()
    assert len(list(cached.parent.glob("*.npz"))) == 2
    load(cache=False)
    assert len(decoded) == 48


@pytest.mark.parametrize(
    "case, arguments, message",
    [
        ("missing", {}, "The image folder {root} does not exist."),
        ("empty", {}, "The folder {root} holds no images (files ending in .png"),
        (
            "corrupt",
            {},
            "Cannot decode the image {root}/sub/broken.jpg (cannot identify image "
            "file): replace or remove it.",
        ),
        (
            "truncated",
            {},
            "Cannot decode the image {root}/sub/broken.jpg (image file is "
            "truncated): replace or remove it.",
        ),
        ("mixed", {}, "mix grayscale and colour (grayscale: 3, colour: 2; e.g. "),
        ("mixed", {}, "pass `channels=1` to convert them all to grayscale or"),
        ("few", {"batch_size": 8}, "holds 5 image(s), fewer than one batch of 8"),
        ("sizes", {}, "differ in size (6x8: 4, 5x5: 1; e.g. a.png is 6x8 and"),
        ("sizes", {"channels": 2}, "Received: channels=2."),
    ],
)
def test_bad_folders_raise_one_clear_error(tmp_path, case, arguments, message):
    root = tmp_path / case
    if case != "missing":
        for k, name in enumerate(["a.png", "b.png", "c.png", "d.png", "e.png"]):
            colour = case == "mixed" and k >= 3
            size = (5, 5) if case == "sizes" and k == 4 else SIZE
            _save(root / name, np.full(size + ((3,) if colour else ()), k))
    if case == "empty":
        for image in root.iterdir():
            image.rename(image.with_suffix(".txt"))
    if case == "corrupt":
        (root / "sub").mkdir()
        (root / "sub" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    if case == "truncated":  # A PNG of noise cut short in its image data.
        noise = np.random.default_rng(0).integers(0, 256, (32, 32))
        _save(root / "sub" / "broken.jpg", noise, format="png")
        whole = (root / "sub" / "broken.jpg").read_bytes()
        (root / "sub" / "broken.jpg").write_bytes(whole[:500])
    arguments = {"batch_size": 2, "data_dir": tmp_path / "cache", **arguments}
    with pytest.raises(ValueError) as error:
        data.from_folder(root, **arguments)
    assert message.format(root=root) in str(error.value)


@pytest.mark.parametrize(
    "name, arguments, message",
    [
        ("folder:", {}, "names no folder: write 'folder:PATH'"),
        ("folder:x", {"split": "test"}, "one split, 'train'"),
        pytest.param(
            "mnist",
            {"channels": 1},
            "converts the images of a folder dataset",
            marks=pytest.mark.skipif(
                importlib.util.find_spec("tensorflow_datasets") is None,
                reason="a TFDS dataset's check (TFDS is not installed)",
            ),
        ),
    ],
)
def test_load_rejects_what_a_folder_cannot_do(name, arguments, message):
    with pytest.raises(ValueError, match=message):
        data.load(name, **arguments)


def test_train_on_a_folder_from_the_command_line(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for k in range(16):  # Colour images of another size and aspect ratio.
        _save(tmp_path / "photos" / f"{k:02d}.png", rng.integers(0, 256, (10, 14, 3)))
    out = tmp_path / "run"
    # Evaluated: the MNIST classifier's scores are skipped for a folder.
    tiny = [a for a in TINY if a != "--no-evaluate"]
    argv = ["train", *tiny, "--dataset", f"folder:{tmp_path / 'photos'}"]
    argv += ["--batch-size", "8", "--steps", "2", "--data-dir", os.fspath(tmp_path)]
    assert cli.main([*argv, "--out", os.fspath(out)]) == 0
    err = capsys.readouterr().err
    assert "16 images of folder:" in err
    assert "resized to 28x28 grayscale for --architecture mnist_dcgan" in err
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["iterations"] == 2
    assert summary["dataset"] == f"folder:{tmp_path / 'photos'}"
    assert "MNIST classifier" in summary["evaluation"]["skipped"]
    assert len(list((tmp_path / folder_lib.CACHE_FOLDER).glob("*.npz"))) == 1


@pytest.mark.parametrize(
    "folder, message",
    [
        ("nowhere", "error: The image folder {root}/nowhere does not exist."),
        ("photos", "holds 3 image(s), fewer than one batch of 8"),
    ],
)
def test_bad_folders_exit_2_from_the_command_line(tmp_path, capsys, folder, message):
    for k in range(3):
        _save(tmp_path / "photos" / f"{k}.png", np.full(SIZE, k))
    argv = ["train", *TINY, "--dataset", f"folder:{tmp_path / folder}"]
    argv += ["--batch-size", "8", "--data-dir", os.fspath(tmp_path)]
    argv += ["--out", os.fspath(tmp_path / "run")]
    fails_cleanly(capsys, argv, message.format(root=tmp_path))
