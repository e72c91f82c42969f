"""The game's step on JAX: a pure, jitted function of the state and the data."""

from __future__ import annotations

import jax
import keras
from keras import ops

from keras_svre.game import data as game_data


def _scope(variables, values):
    """A `keras.StatelessScope` in which `variables` hold `values`."""
    return keras.StatelessScope(state_mapping=list(zip(variables, values)))


def _distinct_buffers(state):
    """`state` with every array in it once (copies where one is repeated).

    Assigning a variable's value to another in eager JAX shares the array
    (SVRE's snapshot slots take the weights' arrays): Keras' jitted step
    donates the state, and an array may be donated only once.
    """
    seen = set()

    def distinct(value):
        if id(value) in seen:
            return jax.numpy.array(value, copy=True)
        seen.add(id(value))
        return value

    return tuple([distinct(v) for v in values] for values in state)


class JAXGameTrainer:
    """What a `Game` runs on JAX (mixed in before `keras.Model`).

    Keras' JAX trainer calls `train_step(state, data)`, jitted, with `state`
    the values of the trainable, non-trainable, optimizer and metric
    variables; it returns the logs and the new state. The game's iteration
    (`Game._iteration`, written in `keras.ops`) is stateful code: it runs
    here inside a `keras.StatelessScope` holding the state, so every read of a
    variable sees the state's value and every `assign` (the optimizers'
    `apply`, BatchNorm statistics, the metrics) lands in the scope, from
    which the new state is collected. This is how Keras' own
    `stateless_call` and `optimizer.stateless_apply` work.

    The field at a point is one forward pass differentiated with `jax.vjp`
    (one backward pass per player); the decision to apply or skip an
    iteration is a `jax.lax.cond`. Every player's optimizer holds part of the
    state (Keras' trainer knows one optimizer): the state's optimizer
    variables are all of theirs, in group order.

    Between steps the state lives outside the variables (Keras' JAX trainer
    detaches it); the game's host-side members (iterations, snapshots,
    restart draws) sync it back first, as Keras' callbacks do.
    """

    # ------------------------------------------------------------------ #
    # The state Keras' JAX trainer carries, with every player's optimizer.
    # ------------------------------------------------------------------ #
    def _optimizer_state_variables(self):
        """Every group's optimizer variables, in group order."""
        variables, seen = [], set()
        for group in self._groups or []:
            for variable in group.optimizer.variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    variables.append(variable)
        return variables

    def _state_kinds(self):
        return {
            "trainable_variables": self.trainable_variables,
            "non_trainable_variables": self.non_trainable_variables,
            "optimizer_variables": self._optimizer_state_variables(),
            "metrics_variables": self.metrics_variables,
        }

    def _get_jax_state(
        self,
        trainable_variables=False,
        non_trainable_variables=False,
        optimizer_variables=False,
        metrics_variables=False,
        purge_model_variables=False,
    ):
        wanted = {
            "trainable_variables": trainable_variables,
            "non_trainable_variables": non_trainable_variables,
            "optimizer_variables": optimizer_variables,
            "metrics_variables": metrics_variables,
        }
        kinds = [v for k, v in self._state_kinds().items() if wanted[k]]
        state = tuple([v.value for v in variables] for variables in kinds)
        state = _distinct_buffers(state)
        if purge_model_variables:
            # As Keras does: the values travel in the state; the variables
            # get them back at `jax_state_sync`.
            for variables in kinds:
                for variable in variables:
                    variable._value = None
        return state

    def jax_state_sync(self):
        if not getattr(self, "_jax_state", None) or self._jax_state_synced:
            return
        for kind, variables in self._state_kinds().items():
            values = self._jax_state.get(kind)
            if values:
                for variable, value in zip(variables, values):
                    variable.assign(value)
        self._jax_state_synced = True

    def _get_state_sharding_spec(self):
        return tuple(
            [v.value.sharding for v in variables]
            for variables in self._state_kinds().values()
        )

    def _sync_state(self):
        """Gives the variables the state a running `fit` holds."""
        self.jax_state_sync()

    def _symbolic_build(self, iterator=None, data_batch=None):
        # A Game is fully built by `compile` (variables and optimizer slots);
        # Keras' symbolic build would call the game on a batch of its data.
        return

    # ------------------------------------------------------------------ #
    # The steps Keras calls (jitted by Keras).
    # ------------------------------------------------------------------ #
    def train_step(self, state, data):
        """One iteration of the method: `(state, data) -> (logs, new state)`."""
        self._check_compiled("training")
        kinds = list(self._state_kinds().values())
        return self._run_on_state(kinds, state, lambda: self._iteration(data))

    def test_step(self, state, data):
        """The players' losses on one held-out minibatch; only metrics change."""
        kinds = [
            self.trainable_variables,
            self.non_trainable_variables,
            self.metrics_variables,
        ]
        return self._run_on_state(kinds, state, lambda: self._evaluation(data))

    @staticmethod
    def _run_on_state(kinds, state, function):
        variables = [v for variables in kinds for v in variables]
        values = [x for xs in state for x in xs]
        with _scope(variables, values) as scope:
            logs = function()
        new_state = tuple([scope.get_current_value(v) for v in vs] for vs in kinds)
        return logs, new_state

    # ------------------------------------------------------------------ #
    # The game's vector field.
    # ------------------------------------------------------------------ #
    def current_point(self):
        """The players' current weights, as tensors (aligned with `game_variables`)."""
        return [v.value for v in self._game_variables]

    def field(self, data, point, commit_state=False, players=None):
        """Each player's gradient of its own loss, at `point`, on `data`.

        One forward pass computes every player's loss (`jax.vjp`), and one
        backward pass per player its gradient. The other variables hold their
        current values (the train step's state, inside it).

        Args:
            data: One minibatch.
            point: Values for `game_variables` (arrays).
            commit_state: Whether to write the non-trainable state the forward
                pass produced (only the current-point evaluation does).
            players: The players whose gradients are wanted (default: all);
                the others' entries are `None`.

        Returns:
            `(gradients, losses)`: a list aligned with `game_variables` and
            the dict of player losses.
        """
        players = self._player_names if players is None else players
        game_variables = self._game_variables
        at_point = {id(v) for v in game_variables}
        fixed = [(v, v.value) for v in self.variables if id(v) not in at_point]
        state_variables = self.non_trainable_variables

        def losses_at(point):
            mapping = fixed + list(zip(game_variables, point))
            with keras.StatelessScope(state_mapping=mapping) as scope:
                losses = self.compute_player_losses(data, training=True)
            # Each player's loss scaled by its optimizer's `loss_scale_factor`
            # (mixed precision), divided out again by the optimizer.
            scaled = tuple(self._loss_scales[name](losses[name]) for name in players)
            state = [scope.get_current_value(v) for v in state_variables]
            return scaled, (losses, state)

        scaled, pullback, (losses, state) = jax.vjp(
            losses_at, list(point), has_aux=True
        )
        gradients = [None] * len(point)
        for p, name in enumerate(players):
            cotangent = tuple(
                ops.ones_like(s) if q == p else ops.zeros_like(s)
                for q, s in enumerate(scaled)
            )
            (grads,) = pullback(cotangent)
            where = self._player_slices[name]
            gradients[where] = self._unscale(grads[where])
        if commit_state:
            for variable, value in zip(state_variables, state):
                if value is not None:
                    variable.assign(value)
        return gradients, losses

    def gradients_at(self, data, point, commit_state=False, players=None):
        """`field(...)`: the step sees the global batch (JAX's SPMD view)."""
        return self.field(data, point, commit_state, players)

    # ------------------------------------------------------------------ #
    # Applying an iteration.
    # ------------------------------------------------------------------ #
    def _apply(self, directions, groups=None):
        self._apply_groups(directions, groups)

    def _cond(self, predicate, true_fn, false_fn):
        """Runs `true_fn()` or `false_fn()` (stateful) as one `jax.lax.cond`.

        Each branch runs in its own scope from the current values of the
        model's and the optimizers' variables; the chosen branch's values
        are then assigned (into the step's scope).
        """
        variables = (
            self.trainable_variables
            + self.non_trainable_variables
            + self._optimizer_state_variables()
        )

        def branch(fn):
            def run(values):
                with _scope(variables, values) as scope:
                    fn()
                return [scope.get_current_value(v) for v in variables]

            return run

        values = jax.lax.cond(
            predicate,
            branch(true_fn),
            branch(false_fn),
            [v.value for v in variables],
        )
        for variable, value in zip(variables, values):
            variable.assign(value)

    # ------------------------------------------------------------------ #
    # The snapshot pass.
    # ------------------------------------------------------------------ #
    def _make_snapshot_pass(self, snapshot_data):
        """The full-data mean of the field at the game's point.

        A jitted function adds one minibatch's size-weighted field to the
        running sums; the host loops it over the minibatches (NumPy, from a
        sequence or a `tf.data.Dataset`). Under a `keras.distribution` each
        minibatch is split over the devices as `fit` splits its data.
        """
        variables = self.variables

        @jax.jit
        def accumulate(values, sums, batch):
            with _scope(variables, values):
                grads, _ = self.field(batch, self.current_point())
            weight = game_data.batch_size(batch)
            return [s + g * ops.cast(weight, g.dtype) for s, g in zip(sums, grads)]

        def run():
            self._sync_state()
            values = [v.value for v in variables]
            sums = [ops.zeros(v.shape, v.dtype) for v in self.game_variables]
            count = 0
            for batch in game_data.iterate(snapshot_data):
                sums = accumulate(values, sums, _on_data_devices(batch))
                count += game_data.batch_size(batch)
            return [s / ops.cast(count, s.dtype) for s in sums]

        return run

    # ------------------------------------------------------------------ #
    # Data, errors.
    # ------------------------------------------------------------------ #
    def _fit_data(self, x):
        """The stacked training data as Keras' `fit` gets it."""
        return x

    def _explained_data_errors(self, k):
        import contextlib

        return contextlib.nullcontext()


def _on_data_devices(batch):
    """A minibatch laid out as `keras.distribution`'s data (split on its batch
    axis), or as it is when no distribution is set.

    A minibatch whose size the devices do not divide (the snapshot data's
    last) is left whole: JAX computes it on the variables' devices, with the
    same result.
    """
    distribution = keras.distribution.distribution()
    if distribution is None:
        return batch
    mesh = distribution.device_mesh
    ways = mesh.shape[list(mesh.axis_names).index(distribution.batch_dim_name)]

    def place(x):
        if ops.shape(x)[0] % ways:
            return x
        layout = distribution.get_data_layout(ops.shape(x))
        return keras.distribution.distribute_tensor(x, layout)

    return keras.tree.map_structure(place, batch)


def compile_function(function):
    """`function` compiled for repeated calls (`jax.jit`)."""
    return jax.jit(function)


def checked_rows(rows, index, limit, message):
    """`rows` (one per entry of `index`); an index >= `limit` gives a NaN row.

    A jitted step cannot raise on a value: the NaN makes the iteration
    non-finite (and `fit` stop). Data checked on the host (`GAN.check_data`)
    is refused before training with `message`'s explanation.
    """
    del message
    inside = ops.expand_dims(ops.cast(index, "int32") < limit, -1)
    return ops.where(inside, rows, ops.cast(float("nan"), rows.dtype))


def trace(function):
    """What `function()` returns, traced (`jax.eval_shape`: nothing runs): its
    structure, with `ShapeDtypeStruct`s for arrays."""
    return jax.eval_shape(function)
