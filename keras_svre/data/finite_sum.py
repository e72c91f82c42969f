"""Finite-sum input pipelines: every example keeps a stable integer index.

SVRE (and any SVRG-type method) treats the game's vector field as a finite
sum `F(w) = (1/n) sum_i F_i(w)` over the data AND the latent noise: example
`k` is always paired with the same latent vector `z_k` of a noise bank, so the
minibatch term `F_i` is the same function at the current weights and at the
snapshot. The pairing is by example index, so every example carries its index
`k` (its position in the split) through shuffling, batching and every epoch.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import numpy as np

from keras_svre import _optional

# Imported at first use: `FiniteSumData` and NumPy images need no TensorFlow.
tf = _optional.LazyModule("tensorflow", "The `tf.data` pipelines of keras_svre.data")

ImageSize = int | tuple[int, int]
_ArrayT = TypeVar("_ArrayT", np.ndarray, "tf.Tensor")


@dataclasses.dataclass(frozen=True)
class FiniteSumData:
    """A dataset prepared for finite-sum (variance-reduced) GAN training.

    Both datasets yield `(index, image)` tuples: `index` is an int32 tensor of
    shape `[B]` holding each example's position in the split (stable across
    epochs, the key into the noise bank), `image` a float32 tensor of shape
    `[B, H, W, C]` scaled to `[-1, 1]` (the generator's tanh range).

    Attributes:
        train: The training stream: reshuffled every epoch, batched at
            `batch_size` with `drop_remainder=True` (every batch is full),
            prefetched. One pass is one epoch of `batches_per_epoch` batches.
        snapshot: The whole split once, in a fixed order, batched at
            `snapshot_batch_size` without dropping the remainder: every
            example appears exactly once, as the snapshot's full mean gradient
            needs. Finite.
        num_examples: Number of examples `n` in the finite sum.
        image_shape: `(H, W, C)` of one image.
        batches_per_epoch: `num_examples // batch_size`.
        name: The dataset's name.
        batch_size: Batch size of `train`.
        snapshot_batch_size: Batch size of `snapshot` (its last batch may be
            smaller).
    """

    train: tf.data.Dataset
    snapshot: tf.data.Dataset
    num_examples: int
    image_shape: tuple[int, int, int]
    batches_per_epoch: int
    name: str
    batch_size: int
    snapshot_batch_size: int


def check_finite(
    dataset: tf.data.Dataset, what: str = "snapshot dataset"
) -> tf.data.Dataset:
    """Raises if `dataset` is known to be infinite.

    The snapshot of SVRE averages the gradient over one full pass of the
    dataset, so that pass must end. A dataset whose cardinality TensorFlow
    cannot tell (`tf.data.UNKNOWN_CARDINALITY`, e.g. after `filter`) is
    accepted.

    Args:
        dataset: The dataset to check.
        what: How to name the dataset in the error message.

    Returns:
        `dataset`, unchanged, so that the call can be chained.

    Raises:
        ValueError: If `dataset.cardinality()` is `tf.data.INFINITE_CARDINALITY`
            (e.g. after `.repeat()` with no count).
    """
    if int(dataset.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
        raise ValueError(
            f"The {what} is infinite (its cardinality is INFINITE, e.g. because "
            "of `.repeat()`), but the snapshot pass of SVRE averages the "
            "gradient over one full pass of the data, so it needs a finite "
            "dataset in which every example appears once. Remove the "
            "`.repeat()` (Keras' `fit` starts a new pass each epoch by itself), "
            "or bound it with `.take(n)`."
        )
    return dataset


def index_examples(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Pairs every example of an unbatched dataset with its position in it.

    SVRE's finite sum pairs example `k` with latent vector `z_k` of a noise
    bank, so that a minibatch gives the same function `F_i` at the current
    weights and at the snapshot. That pairing is by index: use this on your
    own `tf.data` pipeline to give every example the index that travels with
    it. Apply it BEFORE shuffling, repeating or batching (and before any
    random augmentation you want re-drawn), so that index `k` always names the
    same example; cache the result if the upstream order is not
    deterministic.

    Args:
        dataset: A finite, unbatched dataset whose elements are images (one
            tensor each) or dicts with an `"image"` key (as TFDS yields; the
            other keys are dropped).

    Returns:
        A dataset of `(index, image)` tuples, `index` a scalar int32 tensor
        counting from 0.

    Raises:
        ValueError: If `dataset` is infinite.
        TypeError: If its elements are neither tensors nor dicts with an
            `"image"` key.

    Example:

    ```python
    images = tf.data.Dataset.from_tensor_slices(my_uint8_images)
    indexed = keras_svre.data.index_examples(images).cache()
    train = indexed.shuffle(10_000, seed=0).batch(64, drop_remainder=True)
    ```
    """
    check_finite(dataset, what="dataset given to `index_examples`")
    spec = dataset.element_spec
    if isinstance(spec, dict):
        if "image" not in spec:
            raise TypeError(
                "`index_examples` expects a dataset of images or of dicts with an "
                f"'image' key. Received dicts with keys {sorted(spec)}. Map the "
                "dataset to its images first, e.g. "
                "`dataset.map(lambda x: x['pixels'])`."
            )
        dataset = dataset.map(lambda example: example["image"])
    elif not isinstance(spec, tf.TensorSpec):
        raise TypeError(
            "`index_examples` expects a dataset of images or of dicts with an "
            f"'image' key. Received elements of spec {spec}. Map the dataset to "
            "its images first, e.g. `dataset.map(lambda image, label: image)`."
        )
    return dataset.enumerate().map(
        lambda index, image: (tf.cast(index, tf.int32), image)
    )


def to_unit_range(images: _ArrayT) -> _ArrayT:
    """Maps images from the generator's `[-1, 1]` range to `[0, 1]`.

    The inverse of the scaling that `load` applies; use it for sample grids and
    for metrics whose classifier takes pixel values in `[0, 1]`. Values outside
    `[-1, 1]` are clipped.

    Args:
        images: A NumPy array or a tensor of images in `[-1, 1]`.

    Returns:
        float32 images in `[0, 1]`, a NumPy array for a NumPy input and a
        tensor otherwise.
    """
    if isinstance(images, np.ndarray | np.generic):
        unit = (np.asarray(images, dtype=np.float32) + 1.0) / 2.0
        return np.clip(unit, 0.0, 1.0)
    unit = (tf.cast(images, tf.float32) + 1.0) / 2.0
    return tf.clip_by_value(unit, 0.0, 1.0)


def from_dataset(
    dataset: tf.data.Dataset,
    *,
    batch_size: int = 64,
    snapshot_batch_size: int = 500,
    shuffle: bool = True,
    seed: int | None = 0,
    image_size: ImageSize | None = None,
    take: int | None = None,
    name: str = "dataset",
    cache: bool | str = True,
    shuffle_buffer_size: int | None = None,
) -> FiniteSumData:
    """Builds the finite-sum train and snapshot pipelines from your own images.

    The path `load` takes for the named datasets, open to any unbatched
    dataset of uint8 images in `[0, 255]` (or of dicts with an `"image"`
    key). Its order must be deterministic (e.g. TFDS with
    `shuffle_files=False`): an example's index is its position in it.

    Args:
        dataset: A finite, unbatched dataset of uint8 images `[H, W, C]` (or
            `[H, W]`, given a channel axis) or of dicts with an `"image"` key.
        batch_size: Batch size of the training stream. Defaults to `64`.
        snapshot_batch_size: Batch size of the snapshot pass, which only
            computes a mean and so may be larger. Defaults to `500`.
        shuffle: Whether to reshuffle the training stream every epoch.
            Defaults to `True`.
        seed: Seed of the shuffle (`None`: not reproducible). Defaults to `0`.
        image_size: `(H, W)` (or one int for square images) to resize every
            image to. Defaults to `None`: keep the native size, which must
            then be the same for every image.
        take: Keep only the first `take` examples (for quick runs). Defaults
            to `None`: all.
        name: Name recorded in the result. Defaults to `"dataset"`.
        cache: `True` to cache the decoded uint8 images in memory before
            shuffling, a file name to cache them on disk instead (for data
            larger than memory), `False` not to cache. Defaults to `True`.
        shuffle_buffer_size: Size of the shuffle buffer. Defaults to `None`:
            the whole dataset, i.e. a uniform random permutation each epoch.

    Returns:
        A `FiniteSumData`.

    Raises:
        ValueError: If an argument is invalid, if the dataset is infinite, or
            if `batch_size` exceeds its number of examples.
        TypeError: If the images are not uint8.
    """
    target_size = check_pipeline_arguments(
        batch_size=batch_size,
        snapshot_batch_size=snapshot_batch_size,
        take=take,
        shuffle_buffer_size=shuffle_buffer_size,
        image_size=image_size,
    )

    check_finite(dataset, what=f"dataset {name!r}")
    if take is not None:
        dataset = dataset.take(take)
    indexed = index_examples(dataset)
    indexed, image_shape = _fix_image_shape(indexed, target_size, name)
    if cache is not False:
        indexed = indexed.cache("" if cache is True else str(cache))

    num_examples = int(indexed.cardinality())
    if num_examples < 0:  # Unknown: count (this pass also fills the cache).
        num_examples = int(indexed.reduce(0, lambda count, _: count + 1))
    if num_examples == 0:
        raise ValueError(f"The dataset {name!r} is empty.")
    if batch_size > num_examples:
        raise ValueError(
            f"Argument `batch_size` ({batch_size}) is larger than the number of "
            f"examples in {name!r} ({num_examples}): with `drop_remainder=True` "
            "an epoch would have no batch at all. Use a `batch_size` of at most "
            f"{num_examples}" + (" or a larger `take`." if take else ".")
        )

    train = indexed
    if shuffle:
        train = train.shuffle(
            shuffle_buffer_size or num_examples,
            seed=seed,
            reshuffle_each_iteration=True,
        )
    train = (
        train.batch(batch_size, drop_remainder=True)
        .map(_scale_batch, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    snapshot = (
        indexed.batch(snapshot_batch_size)
        .map(_scale_batch, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    return FiniteSumData(
        train=train,
        snapshot=snapshot,
        num_examples=num_examples,
        image_shape=image_shape,
        batches_per_epoch=num_examples // batch_size,
        name=name,
        batch_size=batch_size,
        snapshot_batch_size=snapshot_batch_size,
    )


def _scale_batch(index: tf.Tensor, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    # Scaling after batching keeps the cache in uint8 (4x smaller than float32)
    # and vectorises the arithmetic.
    return index, tf.cast(image, tf.float32) / 127.5 - 1.0


def _fix_image_shape(
    indexed: tf.data.Dataset, target_size: tuple[int, int] | None, name: str
) -> tuple[tf.data.Dataset, tuple[int, int, int]]:
    """Gives every image a static `[H, W, C]` shape, resizing where asked."""
    spec = indexed.element_spec[1]
    if spec.dtype != tf.uint8:
        raise TypeError(
            f"The images of {name!r} must be uint8 in [0, 255] (they are scaled "
            f"to [-1, 1] here). Received dtype {spec.dtype.name}. Convert them "
            "with `tf.image.convert_image_dtype(image, tf.uint8)` or, for your "
            "own scaling, use `index_examples` and batch them yourself."
        )
    shape = spec.shape
    if shape.rank == 2:
        indexed = indexed.map(lambda index, image: (index, image[..., None]))
        shape = shape.concatenate([1])
    if shape.rank != 3 or shape[-1] is None:
        raise ValueError(
            f"The images of {name!r} must have shape [H, W, C] with a known "
            f"number of channels C. Received element shape {shape}."
        )
    channels = int(shape[-1])
    if target_size is None:
        if not shape.is_fully_defined():
            raise ValueError(
                f"The images of {name!r} have no fixed size (element shape "
                f"{shape}). Pass `image_size=(height, width)` to resize them."
            )
        return indexed, (int(shape[0]), int(shape[1]), channels)
    height, width = target_size
    if tuple(shape[:2]) != (height, width):

        def resize(index: tf.Tensor, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            resized = resize_uint8(image, (height, width))
            return index, tf.ensure_shape(resized, (height, width, channels))

        indexed = indexed.map(resize, num_parallel_calls=tf.data.AUTOTUNE)
    return indexed, (height, width, channels)


def resize_uint8(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """Resizes a uint8 image `[H, W, C]` to `size` (antialiased), kept uint8."""
    resized = tf.image.resize(image, size, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def check_pipeline_arguments(
    *,
    batch_size: int,
    snapshot_batch_size: int,
    take: int | None,
    shuffle_buffer_size: int | None,
    image_size: ImageSize | None,
) -> tuple[int, int] | None:
    """Validates the pipeline's arguments; returns `image_size` as `(H, W)`."""
    _check_positive_int("batch_size", batch_size)
    _check_positive_int("snapshot_batch_size", snapshot_batch_size)
    if take is not None:
        _check_positive_int("take", take)
    if shuffle_buffer_size is not None:
        _check_positive_int("shuffle_buffer_size", shuffle_buffer_size)
    return _normalize_image_size(image_size)


def _normalize_image_size(image_size: ImageSize | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    size = tuple(size)
    if len(size) != 2 or not all(
        isinstance(s, int | np.integer) and not isinstance(s, bool) and s > 0
        for s in size
    ):
        raise ValueError(
            "Argument `image_size` must be a positive int or a pair of positive "
            f"ints (height, width). Received: image_size={image_size!r}."
        )
    return int(size[0]), int(size[1])


def _check_positive_int(argument: str, value: object) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value <= 0:
        raise ValueError(
            f"Argument `{argument}` must be a positive integer. "
            f"Received: {argument}={value!r}."
        )
