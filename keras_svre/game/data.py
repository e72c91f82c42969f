"""What a game's train step does with its data: stacked minibatches, and checks.

A game trains on a collection of minibatches, one of:

- a `tf.data.Dataset` (TensorFlow installed; either backend);
- a sequence of minibatches: anything with `len()` and indexing, such as
  `keras_svre.data.ArrayMinibatches` (NumPy arrays, no TensorFlow needed) or
  a `keras.utils.PyDataset`.

The helpers below treat both alike (how many minibatches, their structure,
stacking k of them per iteration), so the game's checks and its `fit` do not
depend on which one it was given.
"""

from __future__ import annotations

import sys

import keras
import numpy as np
from keras import ops

UNEQUAL_MINIBATCHES = (
    "This method stacks {k} consecutive minibatches per iteration, so all "
    "training minibatches must have the same size, but the last is smaller "
    "(batched without `drop_remainder=True`). Batch the training data with "
    "`.batch(batch_size, drop_remainder=True)`; the snapshot data may keep its "
    "remainder."
)

#: `count(data)` of data whose length is unknown / infinite (tf.data's values).
UNKNOWN = -2
INFINITE = -1


def is_tf_dataset(data) -> bool:
    """Whether `data` is a `tf.data.Dataset` (without importing TensorFlow)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(data, tf.data.Dataset)


def is_sequence(data) -> bool:
    """Whether `data` is a sequence of minibatches (`len()` and indexing)."""
    return hasattr(data, "__len__") and hasattr(data, "__getitem__")


def check_minibatches(data, what: str) -> None:
    """Refuses, in one sentence, data that is not a collection of minibatches."""
    if is_tf_dataset(data) or (is_sequence(data) and not _is_array(data)):
        return
    raise TypeError(
        f"A Game's {what} must be minibatches: a `tf.data.Dataset` (e.g. "
        "`tf.data.Dataset.from_tensor_slices(...).batch(batch_size)`, or "
        "`keras_svre.data.load(...)`), or a sequence of minibatches such as "
        "`keras_svre.data.ArrayMinibatches` (NumPy arrays). Received: "
        f"{type(data).__name__}."
    )


def to_tf_dataset(minibatches):
    """A sequence of minibatches as a `tf.data.Dataset` (one pass, same order)."""
    import tensorflow as tf

    signature = keras.tree.map_structure(
        lambda t: tf.TensorSpec(t.shape, t.dtype), element_spec(minibatches)
    )
    dataset = tf.data.Dataset.from_generator(
        lambda: iterate(minibatches), output_signature=signature
    )
    return dataset.apply(tf.data.experimental.assert_cardinality(len(minibatches)))


def _is_array(data) -> bool:
    return isinstance(data, np.ndarray) or ops.is_tensor(data)


def count(data) -> int:
    """The number of minibatches; `UNKNOWN` or `INFINITE` when not finite-known."""
    if is_tf_dataset(data):
        n = int(data.cardinality())
        return {-1: INFINITE, -2: UNKNOWN}.get(n, n)
    return len(data)


def first(data):
    """The first minibatch, as NumPy arrays (or `None` if there is none)."""
    if is_tf_dataset(data):
        for element in data.take(1).as_numpy_iterator():
            return element
        return None
    return data[0] if len(data) else None


def last(data):
    """The last minibatch of finite data, as NumPy arrays."""
    if is_tf_dataset(data):
        return first(data.skip(count(data) - 1))
    return data[len(data) - 1]


def iterate(data):
    """The minibatches, one pass, as NumPy arrays."""
    if is_tf_dataset(data):
        yield from data.as_numpy_iterator()
        return
    for i in range(len(data)):
        yield data[i]


def element_spec(data):
    """The minibatches' structure: `keras.KerasTensor`s, batch dimension `None`.

    From the dataset's `element_spec` for a `tf.data.Dataset`, from the first
    minibatch for a sequence.
    """
    if is_tf_dataset(data):
        import tensorflow as tf

        def convert(spec):
            if not isinstance(spec, tf.TensorSpec):
                return spec
            return keras.KerasTensor(tuple(spec.shape.as_list()), spec.dtype.name)

        return tf.nest.map_structure(convert, data.element_spec)

    def from_array(x):
        x = np.asarray(x)
        return keras.KerasTensor((None,) + x.shape[1:], str(x.dtype))

    element = first(data)
    if isinstance(element, list):
        element = tuple(element)
    return keras.tree.map_structure(from_array, element)


def batch_size(data):
    """The number of examples in a minibatch (a tensor)."""
    return ops.shape(keras.tree.flatten(data)[0])[0]


def take(data, m):
    """Minibatch `m` of a step's data stacked as [B, k, ...]."""
    return keras.tree.map_structure(lambda x: x[:, m], data)


def stack_minibatches(data, k):
    """`k` consecutive minibatches per element, stacked as [B, k, ...].

    With the minibatch index second, a distribution strategy splits the batch
    axis across replicas and every replica holds its share of each of the k
    minibatches, as a single device would.
    """
    if k == 1:
        return data
    if is_tf_dataset(data):
        return data.batch(k, drop_remainder=True).map(_swap_minibatch_axis)
    return StackedMinibatches(data, k)


def _swap_minibatch_axis(*element):
    """[k, B, ...] -> [B, k, ...]."""
    import tensorflow as tf

    element = element[0] if len(element) == 1 else element

    def swap(x):
        perm = [1, 0] + list(range(2, x.shape.rank))
        return tf.transpose(x, perm)

    return tf.nest.map_structure(swap, element)


class StackedMinibatches(keras.utils.PyDataset):
    """A sequence of minibatches, `k` consecutive ones per element as [B, k, ...].

    What `stack_minibatches` makes of a sequence (the tf.data version batches
    the dataset). Passes the epoch hooks on, so the minibatches are
    reshuffled as they would be without stacking.
    """

    def __init__(self, minibatches, k):
        super().__init__()
        self.minibatches = minibatches
        self.k = int(k)

    def __len__(self):
        return len(self.minibatches) // self.k

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(index)
        parts = [self.minibatches[index * self.k + m] for m in range(self.k)]
        if isinstance(parts[0], list):
            parts = [tuple(p) for p in parts]
        sizes = {len(keras.tree.flatten(p)[0]) for p in parts}
        if len(sizes) > 1:
            raise ValueError(UNEQUAL_MINIBATCHES.format(k=self.k))
        return keras.tree.map_structure(
            lambda *xs: np.stack([np.asarray(x) for x in xs], axis=1), *parts
        )

    def on_epoch_begin(self):
        hook = getattr(self.minibatches, "on_epoch_begin", None)
        if hook is not None:
            hook()

    def on_epoch_end(self):
        hook = getattr(self.minibatches, "on_epoch_end", None)
        if hook is not None:
            hook()


def check_minibatches_stack(data, k):
    """Refuses training data that cannot give `k` equal minibatches per iteration."""
    n = count(data)
    if 0 <= n < k:
        raise ValueError(
            f"One iteration of this method uses {k} minibatches but the "
            f"training dataset has {n}: give more data or a smaller batch size."
        )
    if k > 1 and n > 0 and n % k == 0 and _batch_sizes_may_differ(data):
        # The last pair would stack a short minibatch with a full one;
        # found now rather than after an epoch (or a snapshot pass).
        if _size(first(data)) != _size(last(data)):
            raise ValueError(UNEQUAL_MINIBATCHES.format(k=k))


def check_finite_dataset(data):
    """Refuses snapshot data that is not finite minibatches."""
    if not (is_tf_dataset(data) or (is_sequence(data) and not _is_array(data))):
        raise TypeError(
            "`snapshot_data` must be finite minibatches (a `tf.data.Dataset`, "
            "or a sequence such as `keras_svre.data.ArrayMinibatches`). "
            f"Received: {type(data).__name__}."
        )
    if count(data) == INFINITE:
        raise ValueError(
            "SVRE's snapshot pass needs a finite dataset (each example once), but "
            "the dataset given is infinite (was `.repeat()` applied?). Pass the "
            "finite dataset as `snapshot_data=`, or drop the `.repeat()`."
        )


def _batch_sizes_may_differ(data):
    """Whether the minibatches' size is not fixed by the dataset's spec."""
    if not is_tf_dataset(data):
        return True
    import tensorflow as tf

    return any(
        spec.shape.rank and spec.shape[0] is None
        for spec in tf.nest.flatten(data.element_spec)
        if isinstance(spec, tf.TensorSpec)
    )


def _size(element):
    if element is None:
        return None
    return int(np.shape(keras.tree.flatten(element)[0])[0])


def all_finite(tensors):
    """Whether every tensor (`None`s skipped) is finite, as a boolean tensor."""
    checks = [ops.all(ops.isfinite(t)) for t in tensors if t is not None]
    return ops.all(ops.stack(checks)) if checks else ops.convert_to_tensor(True)


def check_player_losses(game, dataset) -> None:
    """Refuses, in one sentence, losses that are not one scalar per player.

    `compute_player_losses` is traced once on the first minibatch (a
    `tf.function` trace / `jax.eval_shape`: nothing runs, no state
    moves), before the first `fit` compiles the step: inside the
    compiled step a missing key or a per-example loss would surface as a
    backend's staging error, or not at all.
    """
    if getattr(game, "_player_losses_checked", False):
        return
    from keras_svre.game import backend as game_backend

    batch = _placeholder_batch(dataset)
    if batch is None:
        return
    if isinstance(batch, list):
        batch = tuple(batch)

    def losses_of_first():
        # A scope without a state mapping: reads the variables, discards
        # writes.
        with keras.StatelessScope():
            return game.compute_player_losses(batch, training=True)

    # Traced, not run: nothing is computed, no state moves.
    losses = game_backend.trace(losses_of_first)
    names = list(game.player_names)
    keys = list(losses) if isinstance(losses, dict) else None
    if keys is None or sorted(keys) != sorted(names):
        received = sorted(keys) if keys is not None else type(losses).__name__
        raise ValueError(
            "`compute_player_losses` must return a dict with one scalar loss "
            f"per player, keyed by the players' names {names}. Received: "
            f"{received}."
        )
    for name in names:
        shape = tuple(getattr(losses[name], "shape", ()))
        if shape:
            raise ValueError(
                "`compute_player_losses` must return one scalar loss per "
                f"player (a mean over the minibatch, e.g. `keras.ops.mean`). "
                f"Received: a loss of shape {shape} for player {name!r}."
            )
    game._player_losses_checked = True


def _placeholder_batch(dataset):
    """A minibatch to trace the losses on, without reading the data.

    For a `tf.data.Dataset`, zeros shaped by its `element_spec` (an unknown
    batch size becomes 2): taking its first element would create an iterator,
    which advances the seeds of its shuffles and changes the data order of the
    run (a resumed run would then see other batches than an uninterrupted
    one). A sequence's first minibatch is read as it is.
    """
    if not is_tf_dataset(dataset):
        return first(dataset)
    if count(dataset) == 0:
        return None

    def zeros(spec):
        shape = [2 if d is None else d for d in spec.shape]
        return np.zeros(shape, keras.backend.standardize_dtype(spec.dtype))

    return keras.tree.map_structure(zeros, element_spec(dataset))
