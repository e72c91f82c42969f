"""The game's step on TensorFlow: tapes, `tf.function`, `tf.distribute`."""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf

from keras_svre import distribute
from keras_svre.game import data as game_data


class TensorFlowGameTrainer:
    """What a `Game` runs on TensorFlow (mixed in before `keras.Model`).

    Keras runs `train_step(data)` inside its `tf.function`, with the
    variables assigned in place. Under a `tf.distribute` strategy the step
    runs per replica: each evaluation of the field is all-reduced once
    (`gradients_at`) and the update is applied through Keras' `apply` on
    every replica (see `keras_svre.distribute`).
    """

    # ------------------------------------------------------------------ #
    # The steps Keras calls.
    # ------------------------------------------------------------------ #
    def train_step(self, data):
        """One iteration of the method the optimizers declare (see `Game`)."""
        self._check_compiled("training")
        # Shape-[1] logs under multi-worker training (keras-team/keras#20585).
        return distribute.logs_for_reduction(self._iteration(data))

    def test_step(self, data):
        """The players' losses on one held-out minibatch; nothing is updated."""
        return distribute.logs_for_reduction(self._evaluation(data))

    # ------------------------------------------------------------------ #
    # The game's vector field.
    # ------------------------------------------------------------------ #
    def current_point(self):
        """The players' current weights, as tensors (aligned with `game_variables`)."""
        return [tf.convert_to_tensor(v) for v in self._game_variables]

    def field(self, data, point, commit_state=False, players=None):
        """Each player's gradient of its own loss, at `point`, on `data`.

        One forward pass computes every player's loss; one persistent tape
        gives every player's gradient. On this replica's data only (see
        `gradients_at` for the global batch).

        Args:
            data: One minibatch.
            point: Values for `game_variables` (tensors).
            commit_state: Whether to write the non-trainable state the forward
                pass produced (only the current-point evaluation does).
            players: The players whose gradients are wanted (default: all);
                the others' entries are `None`.

        Returns:
            `(gradients, losses)`: a list aligned with `game_variables` and
            the dict of player losses.
        """
        players = self._player_names if players is None else players
        with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
            tape.watch(point)
            mapping = list(zip(self._game_variables, point))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                losses = self.compute_player_losses(data, training=True)
            # Each player's loss scaled by its optimizer's `loss_scale_factor`
            # (mixed precision), which the optimizer divides out again in
            # `extrapolate` and `apply`.
            scaled = {name: self._loss_scales[name](losses[name]) for name in players}
        gradients = [None] * len(point)
        for name in players:
            where = self._player_slices[name]
            grads = tape.gradient(
                scaled[name],
                point[where],
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            gradients[where] = self._unscale(grads)
        del tape
        if commit_state:
            for variable in self.non_trainable_variables:
                value = scope.get_current_value(variable)
                if value is not None:
                    variable.assign(value)
        return gradients, losses

    def gradients_at(self, data, point, commit_state=False, players=None):
        """`field(...)` of the global batch: averaged over replicas under a strategy."""
        gradients, losses = self.field(data, point, commit_state, players)
        present = [i for i, g in enumerate(gradients) if g is not None]
        reduced = distribute.all_reduce_mean([gradients[i] for i in present])
        for i, g in zip(present, reduced):
            gradients[i] = g
        return gradients, losses

    # ------------------------------------------------------------------ #
    # Applying an iteration.
    # ------------------------------------------------------------------ #
    def _apply(self, directions, groups=None):
        # The updates must not start before every evaluation of the step has
        # finished reading the variables: automatic control dependencies order
        # the reads and the writes, not the reads' consumers, and without this
        # the results varied from run to run (seen on CPU, TF 2.21).
        with tf.control_dependencies([d for d in directions if d is not None]):
            directions = [None if d is None else tf.identity(d) for d in directions]
            self._apply_groups(directions, groups)

    def _cond(self, predicate, true_fn, false_fn):
        """Runs `true_fn()` or `false_fn()` (stateful, returning nothing)."""

        def returning(fn, value):
            def run():
                fn()
                return tf.constant(value)

            return run

        distribute.cond_on_every_replica(
            predicate, returning(true_fn, True), returning(false_fn, False)
        )

    # ------------------------------------------------------------------ #
    # The snapshot pass.
    # ------------------------------------------------------------------ #
    def _make_snapshot_pass(self, snapshot_data):
        """A `tf.function` computing the full-data mean of the field at the point.

        Iterates the whole finite-sum dataset in one function (under a
        distribution strategy across all replicas and workers), weighting
        each batch by its number of examples.
        """
        if not game_data.is_tf_dataset(snapshot_data):
            snapshot_data = game_data.to_tf_dataset(snapshot_data)
        strategy = self.distribute_strategy
        # DATA sharding: the finite-sum indices must survive multi-worker input.
        distributed = strategy.experimental_distribute_dataset(
            distribute.shard_by_data(snapshot_data)
        )
        variables = self.game_variables

        def batch_sums(batch):
            n = tf.shape(tf.nest.flatten(batch)[0])[0]
            grads, _ = self.field(batch, self.current_point())
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

    # ------------------------------------------------------------------ #
    # Data, errors, state.
    # ------------------------------------------------------------------ #
    def _fit_data(self, x):
        """The stacked training data as Keras' `fit` gets it."""
        if not game_data.is_tf_dataset(x):
            return x  # A sequence (`keras.utils.PyDataset`): Keras iterates it.
        # DATA sharding keeps the finite-sum indices (multi-worker).
        return distribute.shard_by_data(x)

    @contextlib.contextmanager
    def _explained_data_errors(self, k):
        """Turns TensorFlow's errors about the data into one sentence each."""
        try:
            yield
        except tf.errors.InvalidArgumentError as e:
            text = str(e)
            if k > 1 and "Cannot batch tensors with different shapes" in text:
                raise ValueError(game_data.UNEQUAL_MINIBATCHES.format(k=k)) from None
            for marker, message in self._data_error_messages().items():
                if marker in text:
                    raise ValueError(message) from None
            raise

    def _sync_state(self):
        """Nothing to do: TensorFlow's variables always hold the state."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TensorFlow trainer builds a model from its first batch before
        # `fit` under a strategy; a Game is fully built by `compile` (variables
        # and optimizer slots), so there is nothing to build. Skipping it also
        # avoids keras-team/keras#20585: under MultiWorkerMirroredStrategy that
        # build reduces the first distributed batch, which raises. Pinned by
        # tests/test_distribute.py (two-worker fit).
        return


def compile_function(function):
    """`function` compiled for repeated calls (a retracing-tolerant `tf.function`)."""
    return tf.function(function, reduce_retracing=True)


def checked_rows(rows, index, limit, message):
    """`rows` (one per entry of `index`), raising with `message` for an index >= `limit`."""
    index = tf.cast(index, tf.int32)
    # Checked: an index out of the finite sum is a data error, not a new example.
    check = tf.debugging.assert_less(index, limit, message=message)
    with tf.control_dependencies([check]):
        return tf.identity(rows)


def trace(function):
    """What `function()` returns, traced in a graph (nothing runs): its
    structure, with tensors carrying their static shapes.

    Without AutoGraph, so that an error it raises is the error itself.
    """
    return (
        tf.function(function, autograph=False)
        .get_concrete_function()
        .structured_outputs
    )
