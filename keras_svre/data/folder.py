"""A folder of your own images as a finite sum: `load("folder:PATH")`.

The image files under a folder (PNG, JPEG, BMP and the first frame of GIFs,
sub-folders included) are taken in the sorted order of their paths relative
to it, so that an image's index (its key into the GAN's noise bank) stays the
same from run to run. They are decoded (by Pillow), converted to the
requested channels, centre-cropped to the target's aspect ratio and resized
once: the prepared uint8 array is kept in an `.npz` file whose name is a hash
of the folder, its files' names, sizes and modification times and the target
shape, so a later load of an unchanged folder decodes nothing.

No TensorFlow needed: the preparation is Pillow and NumPy on every backend.
On the TensorFlow backend the result is a `tf.data` pipeline
(`from_dataset`), on the others NumPy minibatches (`from_arrays`).
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pathlib
import re
import struct
import tempfile
import warnings
import zlib

import keras
import numpy as np
from PIL import Image

from keras_svre.data.arrays import from_arrays
from keras_svre.data.finite_sum import (
    FiniteSumData,
    ImageSize,
    check_pipeline_arguments,
    from_dataset,
)
from keras_svre.data.names import FOLDER_PREFIX, resolve_data_dir

#: The file name endings (any case) read as images.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
#: Where the prepared arrays go, under the data dir.
CACHE_FOLDER = "keras_svre_folders"
# Part of every cache key: change it when the preparation changes, so that
# arrays prepared the old way are not used.
_PREPARATION_VERSION = 2
_CHANNEL_NAMES = {1: "grayscale", 3: "colour"}
# ITU-R 601 luma, the weights of `tf.image.rgb_to_grayscale` (the preparation
# of version 1), so that grayscale images stay as they were.
_LUMA_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], np.float32)
# What Pillow raises for a file it cannot decode (besides OSError, which
# includes `UnidentifiedImageError` and truncated files).
_DECODE_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    SyntaxError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)


def from_folder(
    path: str | os.PathLike,
    *,
    image_size: ImageSize | None = None,
    channels: int | None = None,
    batch_size: int = 64,
    snapshot_batch_size: int = 500,
    shuffle: bool = True,
    seed: int | None = 0,
    take: int | None = None,
    data_dir: str | os.PathLike | None = None,
    cache: bool = True,
    shuffle_buffer_size: int | None = None,
    name: str | None = None,
) -> FiniteSumData:
    """Loads a folder of images as a finite sum for SVRE: `(index, image)` batches.

    Every file under `path` whose name ends in .png, .jpg, .jpeg, .bmp or .gif
    (any case; sub-folders included; names starting with "." skipped) is one
    example. Index `k` is the `k`-th file in the sorted order of the paths
    relative to `path`. An image is decoded (a GIF's first frame; an alpha
    channel is dropped), converted to `channels`, centre-cropped to the
    aspect ratio of `image_size` and resized to it; the images are then
    scaled to `[-1, 1]` like those of `load`.

    Args:
        path: The folder.
        image_size: `(H, W)` (or one int for square images) to bring every
            image to. Defaults to `None`: keep the images' size, which must
            then be the same for all.
        channels: `1` to convert every image to grayscale, `3` to colour.
            Defaults to `None`: as the images are, which must then be all
            grayscale or all colour.
        batch_size: Batch size of the training stream. Defaults to `64`.
        snapshot_batch_size: Batch size of the snapshot pass. Defaults to
            `500`.
        shuffle: Whether to reshuffle the training stream every epoch.
            Defaults to `True`.
        seed: Seed of the shuffle. Defaults to `0`.
        take: Keep only the first `take` images (for quick runs). Defaults
            to `None`: all.
        data_dir: The prepared images are kept in its `keras_svre_folders`
            folder. Defaults to `None`: `$KERAS_SVRE_DATA_DIR` if set, else
            `$KERAS_HOME/keras_svre/folders` (`~/.keras/keras_svre/folders`).
        cache: Whether to keep the prepared images on disk, so that the next
            load of the unchanged folder decodes nothing. Defaults to `True`.
        shuffle_buffer_size: Defaults to `None`: all the images, i.e. a
            uniform random permutation each epoch. Off the TensorFlow backend
            it must be `None` or at least the number of images (NumPy
            minibatches always permute them all).
        name: Name recorded in the result. Defaults to `"folder:<path>"`.

    Returns:
        A `FiniteSumData`: `tf.data` pipelines on the TensorFlow backend,
        `ArrayMinibatches` on the others (no TensorFlow needed).

    Raises:
        ValueError: If an argument is invalid, the folder is missing or holds
            no images or fewer than `batch_size`, an image cannot be read or
            decoded, or the images differ in channels (without `channels`) or
            in size (without `image_size`).
    """
    target_size = check_pipeline_arguments(
        batch_size=batch_size,
        snapshot_batch_size=snapshot_batch_size,
        take=take,
        shuffle_buffer_size=shuffle_buffer_size,
        image_size=image_size,
    )
    if channels not in (None, 1, 3):
        raise ValueError(
            "Argument `channels` must be 1 (grayscale), 3 (colour) or None (as "
            f"the images are). Received: channels={channels!r}."
        )
    folder = pathlib.Path(path).expanduser()
    files = _checked_image_files(folder, batch_size)
    cache_file = _cache_file(folder, files, target_size, channels, data_dir)
    images = _read_cache(cache_file, len(files)) if cache else None
    if images is None:
        images = _prepare(folder, files, target_size, channels)
        if cache:
            _write_cache(cache_file, images, files)
    return _finite_sum(
        images,
        batch_size=batch_size,
        snapshot_batch_size=snapshot_batch_size,
        shuffle=shuffle,
        seed=seed,
        take=take,
        name=name or f"{FOLDER_PREFIX}{os.fspath(path)}",
        shuffle_buffer_size=shuffle_buffer_size,
    )


def _checked_image_files(folder: pathlib.Path, batch_size: int) -> list[str]:
    """The folder's image files; raises if there is no folder or too few images."""
    if not folder.exists():
        raise ValueError(f"The image folder {folder} does not exist.")
    if not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder of images.")
    files = image_files(folder)
    if not files:
        raise ValueError(
            f"The folder {folder} holds no images (files ending in "
            f"{', '.join(IMAGE_EXTENSIONS)}, sub-folders included)."
        )
    if len(files) < batch_size:
        raise ValueError(
            f"The folder {folder} holds {len(files)} image(s), fewer than one "
            f"batch of {batch_size}: add images or use a smaller batch size."
        )
    return files


def _finite_sum(images, *, shuffle_buffer_size, **pipeline) -> FiniteSumData:
    """The prepared images as a tf.data finite sum on TensorFlow, NumPy elsewhere.

    `pipeline` holds the arguments both builders take (`batch_size`,
    `snapshot_batch_size`, `shuffle`, `seed`, `take`, `name`).
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return from_dataset(
            tf.data.Dataset.from_tensor_slices(images),
            # Already in memory, at its final size.
            cache=False,
            shuffle_buffer_size=shuffle_buffer_size,
            **pipeline,
        )
    take = pipeline["take"]
    num_images = len(images) if take is None else min(take, len(images))
    if shuffle_buffer_size is not None and shuffle_buffer_size < num_images:
        raise ValueError(
            f"Argument `shuffle_buffer_size` must be None or at least the number of "
            f"images ({num_images}) off the TensorFlow backend, whose NumPy "
            "minibatches permute all the images each epoch: leave it unset. "
            f"Received: shuffle_buffer_size={shuffle_buffer_size}."
        )
    return from_arrays(images, **pipeline)


def load_folder(
    name: str, *, split: str = "train", cache: bool | str = True, **arguments
) -> FiniteSumData:
    """`keras_svre.data.load("folder:PATH", ...)`: the folder PATH's images.

    Args:
        name: `"folder:PATH"`.
        split: `"train"`, a folder's only split.
        cache: `load`'s: anything but `False` keeps the prepared images on
            disk (they are always held in memory).
        **arguments: Those of `from_folder`.

    Returns:
        A `FiniteSumData` (see `from_folder`).

    Raises:
        ValueError: If `name` names no folder or `split` is not `"train"`;
            see `from_folder` for the rest.
    """
    path = name[len(FOLDER_PREFIX) :]
    if not path:
        raise ValueError(
            f"Dataset {name!r} names no folder: write '{FOLDER_PREFIX}PATH'."
        )
    if split != "train":
        raise ValueError(
            f"A folder of images has one split, 'train'. Received: split={split!r}."
        )
    return from_folder(path, cache=cache is not False, name=name, **arguments)


def image_files(folder: str | os.PathLike) -> list[str]:
    """The image files under `folder`, in index order.

    Args:
        folder: The folder.

    Returns:
        Their paths relative to `folder` (with "/" between parts), sorted:
        the `k`-th is the example of index `k` in `from_folder`.
    """
    found = []
    for parent, subfolders, names in os.walk(folder):
        # Hidden folders and files (.git, macOS' "._photo.jpg") are not images.
        subfolders[:] = [s for s in subfolders if not s.startswith(".")]
        relative = pathlib.Path(parent).relative_to(folder)
        found += [
            (relative / n).as_posix()
            for n in names
            if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")
        ]
    return sorted(found)


def _cache_file(folder, files, target_size, channels, data_dir) -> pathlib.Path:
    """Where the images prepared from these files for this target are kept.

    `<folder name>-<hash of the folder and target>-<hash of the files>.npz`:
    a later preparation for the same folder and target replaces the file.
    """
    listing = []
    for relative in files:
        try:
            stat = (folder / relative).stat()
        except OSError as error:
            raise ValueError(
                f"Cannot read the image {folder / relative} ({error.strerror or error})."
            ) from None
        listing.append([relative, stat.st_size, stat.st_mtime_ns])
    target = json.dumps([str(folder.resolve()), target_size, channels])
    contents = json.dumps([_PREPARATION_VERSION, target, listing])
    stem = re.sub(r"[^A-Za-z0-9_.]", "_", folder.resolve().name)[:40] or "folder"
    target_hash = hashlib.sha256(target.encode()).hexdigest()[:12]
    contents_hash = hashlib.sha256(contents.encode()).hexdigest()[:16]
    return _cache_folder(data_dir) / f"{stem}-{target_hash}-{contents_hash}.npz"


def _cache_folder(data_dir) -> pathlib.Path:
    directory = resolve_data_dir(data_dir)
    if directory is not None:
        return pathlib.Path(directory) / CACHE_FOLDER
    home = os.environ.get("KERAS_HOME") or os.path.join("~", ".keras")
    return pathlib.Path(home).expanduser() / "keras_svre" / "folders"


def _read_cache(cache_file: pathlib.Path, num_images: int) -> np.ndarray | None:
    """The prepared images, or `None` if there are none (or they are unusable)."""
    if not cache_file.is_file():
        return None
    try:
        with np.load(cache_file) as stored:
            images = stored["images"]
    except (OSError, ValueError, KeyError):  # Damaged: prepare again.
        return None
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != num_images:
        return None
    return images


def _write_cache(cache_file: pathlib.Path, images: np.ndarray, files) -> None:
    """Writes the prepared images atomically; says so if it cannot."""
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=cache_file.parent, suffix=".tmp", delete=False
        ) as temporary:
            np.savez(temporary, images=images, files=np.array(files))
        os.replace(temporary.name, cache_file)
    except OSError as error:
        warnings.warn(
            f"Could not keep the prepared images in {cache_file} ({error}); the "
            "next load will decode them again.",
            stacklevel=3,
        )
        return
    # The same folder and target prepared from other files: out of date.
    _, target_hash, _ = cache_file.stem.rsplit("-", 2)
    for old in cache_file.parent.glob(f"*-{target_hash}-*.npz"):
        if old != cache_file:
            old.unlink(missing_ok=True)


def _prepare(folder, files, target_size, channels) -> np.ndarray:
    """Decodes, converts, crops and resizes every image; checks they agree."""
    images = [
        _prepare_one(folder / relative, target_size, channels) for relative in files
    ]
    if channels is None:
        _check_same(
            folder,
            files,
            [image.shape[-1] for image in images],
            what="mix grayscale and colour",
            describe=lambda c: _CHANNEL_NAMES[c],
            remedy="pass `channels=1` to convert them all to grayscale or "
            "`channels=3` to colour",
        )
    if target_size is None:
        _check_same(
            folder,
            files,
            [image.shape[:2] for image in images],
            what="differ in size",
            describe=lambda size: f"{size[0]}x{size[1]}",
            remedy="pass `image_size=(height, width)` to centre-crop and resize "
            "them to one size",
        )
    return np.stack(images)


def _prepare_one(file: pathlib.Path, target_size, channels) -> np.ndarray:
    """One image as uint8 `[H, W, C]`: decoded, converted, cropped, resized."""
    try:
        contents = file.read_bytes()
    except OSError as error:
        raise ValueError(
            f"Cannot read the image {file} ({error.strerror or error})."
        ) from None
    try:
        image = _decode(contents)
    except _DECODE_ERRORS as error:
        raise ValueError(
            f"Cannot decode the image {file} ({_reason(error)}): replace or remove it."
        ) from None
    if channels is not None and image.shape[-1] != channels:
        image = _convert(image, channels)
    if target_size is not None:
        image = _crop_and_resize(image, target_size)
    return image


def _decode(contents: bytes) -> np.ndarray:
    """The first frame, as uint8 `[H, W, 1]` (grayscale) or `[H, W, 3]` (colour).

    An alpha channel is dropped: the networks take none.
    """
    with Image.open(io.BytesIO(contents)) as image:
        image.load()  # The first frame only (a GIF's others are not read).
        mode = image.mode
        if mode == "1":
            image, mode = image.convert("L"), "L"
        elif mode in ("P", "PA"):
            # The palette's colours (with its transparency, which is then
            # dropped: converting to RGB alone would warn about it).
            has_alpha = mode == "PA" or "transparency" in image.info
            mode = "RGBA" if has_alpha else "RGB"
            image = image.convert(mode)
        if mode.startswith("I"):  # 16 bits ("I;16", "I;16B", "I" of a PNG).
            pixels = np.asarray(image).astype(np.int64)
            return (np.clip(pixels, 0, 65535) >> 8).astype(np.uint8)[..., None]
        if mode in ("L", "LA"):
            return np.asarray(image, dtype=np.uint8).reshape(
                image.height, image.width, -1
            )[..., :1]
        if mode not in ("RGB", "RGBA", "RGBX"):  # CMYK, YCbCr, ...
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)[..., :3]


def _convert(image: np.ndarray, channels: int) -> np.ndarray:
    if channels == 3:
        return np.repeat(image, 3, axis=-1)
    gray = image.astype(np.float32) @ _LUMA_WEIGHTS
    return np.clip(np.round(gray), 0, 255).astype(np.uint8)[..., None]


def _crop_and_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The largest centred window of `size`'s aspect ratio, resized to `size`."""
    height, width = size
    rows, columns = image.shape[:2]
    if rows * width > columns * height:  # Taller than the target.
        crop_rows, crop_columns = max(1, round(columns * height / width)), columns
    else:
        crop_rows, crop_columns = rows, max(1, round(rows * width / height))
    top, left = (rows - crop_rows) // 2, (columns - crop_columns) // 2
    image = image[top : top + crop_rows, left : left + crop_columns]
    if (crop_rows, crop_columns) == (height, width):
        return image
    # Pillow's bilinear filter widens with the reduction factor: antialiased.
    planes = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    resized = planes.resize((width, height), resample=Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8).reshape(height, width, -1)


def _check_same(folder, files, values, what, describe, remedy) -> None:
    """Raises if `values` (one per file) are not all equal, with counts and examples."""
    counts = collections.Counter(values)
    if len(counts) == 1:
        return
    first = {}
    for relative, value in zip(files, values, strict=True):
        first.setdefault(value, relative)
    kinds = sorted(counts, key=lambda value: (-counts[value], first[value]))
    summary = ", ".join(f"{describe(k)}: {counts[k]}" for k in kinds)
    examples = " and ".join(f"{first[k]} is {describe(k)}" for k in kinds[:2])
    raise ValueError(
        f"The images in {folder} {what} ({summary}; e.g. {examples}): {remedy}."
    )


def _reason(error: Exception) -> str:
    """Pillow's message without the in-memory file it names."""
    message = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(error))
    return message.strip().rstrip(".") or type(error).__name__
