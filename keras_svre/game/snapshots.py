"""SVRE's snapshots: the full pass, the restart draws and their schedule."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from keras_svre import distribute
from keras_svre.game import data as game_data


def uniform_draw(seed: int, counter: int) -> float:
    """The restart draw number `counter` of a game seeded with `seed`, in [0, 1)."""
    return float(np.random.default_rng([seed, counter]).random())


def make_snapshot_pass(game, snapshot_data):
    """A `tf.function` computing the full-data mean of `game`'s field at its point.

    Iterates the whole finite-sum dataset in one function (under a
    distribution strategy across all replicas and workers), weighting each
    batch by its number of examples.
    """
    strategy = game.distribute_strategy
    # DATA sharding: the finite-sum indices must survive multi-worker input.
    distributed = strategy.experimental_distribute_dataset(
        distribute.shard_by_data(snapshot_data)
    )
    variables = game.game_variables

    def batch_sums(batch):
        n = game_data.batch_size(batch)
        grads, _ = game.field(batch, game.current_point())
        weight = tf.cast(n, grads[0].dtype)
        # An empty shard (uneven last batch across replicas) has NaN losses.
        sums = [tf.where(n > 0, g * weight, tf.zeros_like(g)) for g in grads]
        # All players' sums and the count in one all-reduce, in replica
        # context (`strategy.reduce` of this list fails under
        # MultiWorkerMirroredStrategy: it stacks the tensors).
        context = tf.distribute.get_replica_context()
        return context.all_reduce(tf.distribute.ReduceOp.SUM, sums + [weight])

    @tf.function
    def run():
        # A tuple, not a list: AutoGraph would stack a list of loop tensors.
        sums = tuple(tf.zeros(v.shape, v.dtype) for v in variables)
        count = tf.constant(0, tf.int64)
        for batch in distributed:
            totals = strategy.run(batch_sums, args=(batch,))
            # Every replica holds the same totals: take the first's.
            totals = strategy.experimental_local_results(totals)[0]
            sums = tuple(s + b for s, b in zip(sums, totals[:-1]))
            count += tf.cast(totals[-1], tf.int64)
        return [s / tf.cast(count, s.dtype) for s in sums]

    return run


class SnapshotSchedule(keras.callbacks.Callback):
    """Takes SVRE's snapshots: one before training, then Bernoulli(p) restarts.

    `Game.fit` adds it for variance-reduced methods. After each iteration a
    new snapshot (with its full pass) is taken with probability `p`; the
    draws come from the game's seed and a counter saved with the model, so
    they are the same on every replica and worker and a resumed run repeats
    them.

    Args:
        snapshot_data: The finite-sum dataset of the snapshot pass.
        restart_probability: The per-iteration snapshot probability.
    """

    def __init__(self, snapshot_data, restart_probability: float):
        super().__init__()
        self.snapshot_data = snapshot_data
        self.restart_probability = float(restart_probability)
        self._last_iteration = None

    def on_train_begin(self, logs=None):
        if self.model.snapshots_taken == 0:
            self.model.take_snapshot(self.snapshot_data)
        self._last_iteration = self.model.iterations

    def on_train_batch_end(self, batch, logs=None):
        now = self.model.iterations
        steps = max(now - self._last_iteration, 0)
        self._last_iteration = now
        if steps == 0:
            return
        # With steps_per_execution > 1 several iterations ran: any of their
        # draws succeeding triggers one snapshot now.
        threshold = 1.0 - math.pow(1.0 - self.restart_probability, steps)
        if self.model.draw_uniform() < threshold:
            self.model.take_snapshot(self.snapshot_data)
