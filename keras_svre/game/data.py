"""What a game's train step does with its data: stacked minibatches, and checks."""

from __future__ import annotations

import tensorflow as tf

UNEQUAL_MINIBATCHES = (
    "This method stacks {k} consecutive minibatches per iteration, so all "
    "training minibatches must have the same size, but the last is smaller "
    "(batched without `drop_remainder=True`). Batch the training data with "
    "`.batch(batch_size, drop_remainder=True)`; the snapshot data may keep its "
    "remainder."
)


def batch_size(data):
    """The number of examples in a minibatch (a tensor)."""
    return tf.shape(tf.nest.flatten(data)[0])[0]


def take(data, m):
    """Minibatch `m` of a step's data stacked as [B, k, ...]."""
    return tf.nest.map_structure(lambda x: x[:, m], data)


def stack_minibatches(dataset, k):
    """`k` consecutive minibatches per element, stacked as [B, k, ...].

    With the minibatch index second, a distribution strategy splits the batch
    axis across replicas and every replica holds its share of each of the k
    minibatches, as a single device would.
    """
    if k == 1:
        return dataset
    return dataset.batch(k, drop_remainder=True).map(_swap_minibatch_axis)


def _swap_minibatch_axis(*element):
    """[k, B, ...] -> [B, k, ...]."""
    element = element[0] if len(element) == 1 else element

    def swap(x):
        perm = [1, 0] + list(range(2, x.shape.rank))
        return tf.transpose(x, perm)

    return tf.nest.map_structure(swap, element)


def check_minibatches_stack(dataset, k):
    """Refuses training data that cannot give `k` equal minibatches per iteration."""
    n = int(dataset.cardinality())
    if 0 <= n < k:
        raise ValueError(
            f"One iteration of this method uses {k} minibatches but the "
            f"training dataset has {n}: give more data or a smaller batch size."
        )
    if k > 1 and n > 0 and n % k == 0 and _batch_sizes_may_differ(dataset):
        # The last pair would stack a short minibatch with a full one;
        # found now rather than after an epoch (or a snapshot pass).
        if _first_batch_size(dataset.take(1)) != _first_batch_size(dataset.skip(n - 1)):
            raise ValueError(UNEQUAL_MINIBATCHES.format(k=k))


def check_finite_dataset(dataset):
    """Refuses snapshot data that is not a finite `tf.data.Dataset`."""
    if not isinstance(dataset, tf.data.Dataset):
        raise TypeError(
            "`snapshot_data` must be a finite `tf.data.Dataset` of minibatches. "
            f"Received: {type(dataset).__name__}."
        )
    if int(dataset.cardinality()) == tf.data.INFINITE_CARDINALITY:
        raise ValueError(
            "SVRE's snapshot pass needs a finite dataset (each example once), but "
            "the dataset given is infinite (was `.repeat()` applied?). Pass the "
            "finite dataset as `snapshot_data=`, or drop the `.repeat()`."
        )


def _batch_sizes_may_differ(dataset):
    """Whether the minibatches' size is not fixed by the dataset's spec."""
    return any(
        spec.shape.rank and spec.shape[0] is None
        for spec in tf.nest.flatten(dataset.element_spec)
        if isinstance(spec, tf.TensorSpec)
    )


def _first_batch_size(dataset):
    """The size of the first minibatch of `dataset` (reads one element)."""
    for element in dataset.take(1):
        return int(batch_size(element))
    return None


def all_finite(tensors):
    """Whether every tensor (`None`s skipped) is finite, as a boolean tensor."""
    checks = [tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)
