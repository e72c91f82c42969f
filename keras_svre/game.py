"""The generic two-player (n-player) game and its train step."""

from __future__ import annotations

import contextlib
import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_svre import distribute
from keras_svre.callbacks import NonFiniteLossError
from keras_svre.optimizers import SVRE, Extragradient

UPDATE_POINTS = ("extrapolated", "opponent_extrapolated")


def _batch_size(data):
    return tf.shape(tf.nest.flatten(data)[0])[0]


def _take(data, m):
    """Minibatch `m` of a step's data stacked as [B, k, ...]."""
    return tf.nest.map_structure(lambda x: x[:, m], data)


def _swap_minibatch_axis(*element):
    """[k, B, ...] -> [B, k, ...] for k consecutive minibatches (see `Game.fit`).

    With the minibatch index second, a distribution strategy splits the batch
    axis across replicas and every replica holds its share of each of the k
    minibatches, as a single device would.
    """
    element = element[0] if len(element) == 1 else element

    def swap(x):
        perm = [1, 0] + list(range(2, x.shape.rank))
        return tf.transpose(x, perm)

    return tf.nest.map_structure(swap, element)


class Game(keras.Model):
    """A differentiable game whose players are trained with `fit`.

    A game has players, each owning some trainable variables and minimising
    its own loss. Subclasses say who the players are and what their losses
    are on a minibatch; the train step is this class's and serves every method:

    - a plain Keras optimizer (`SGD`, `Adam`, ...): simultaneous gradient
      steps (SGDA), one minibatch per iteration;
    - `keras_svre.Extragradient`: stochastic extragradient (SE, SE-A), two
      minibatches per iteration (i for the extrapolation, j for the update);
    - `keras_svre.SVRE`: SVRE; on each minibatch the game's field is
      evaluated at the current (or extrapolated) point and at the snapshot,
      on the same data, and the update uses `g - g_snapshot + mu`. A
      snapshot pass over the whole finite-sum dataset sets `mu`, before
      training and then after each iteration with probability
      `restart_probability` (default `1/n`).

    Both players' gradients at one point come from one forward pass of the
    game (one persistent tape). The other points (snapshot, extrapolated)
    are evaluated statelessly through `keras.StatelessScope`, so no copy of
    any network is made.

    Non-trainable state (BatchNorm moving statistics, spectral-norm power
    iterates, random-seed state): only the evaluation at the current point on
    minibatch i updates it. The snapshot, extrapolated-point and
    snapshot-pass evaluations run in training mode (the same function as the
    current-point one) but their state updates are discarded. The snapshot
    evaluation on a minibatch runs before the current-point one, so both see
    the same random state (the same dropout masks, for instance).

    Non-finite values: an iteration whose losses or gradients (at any of its
    evaluation points) are NaN or infinite is not applied, and `fit` raises
    `keras_svre.callbacks.NonFiniteLossError` naming the iteration; the
    weights are those of the last good iteration. The logs' `loss` entry
    (the players' losses summed) is NaN then, so Keras' `TerminateOnNaN`
    works too.

    Mixed precision: under the `mixed_float16` dtype policy (or with the
    optimizers wrapped in `keras.optimizers.LossScaleOptimizer`) the game
    scales the losses dynamically itself, for every method: an iteration with
    a non-finite gradient is skipped (extrapolation included) and the scale
    halved; after `dynamic_growth_steps` (default 2,000) applied iterations
    in a row it doubles. The scale (`loss_scale`) is a weight of the game,
    saved with it. An explicit `loss_scale_factor` on the optimizers is a
    fixed scale, kept as given.

    Subclasses implement:

    - `players()`: an ordered dict `name -> list of trainable variables`;
    - `compute_player_losses(data, training)`: a dict `name -> scalar loss`
      on one minibatch, each a mean over the minibatch's examples (the
      snapshot pass weighs batches by their size), all from ONE forward
      pass.

    Args:
        seed: Seed of the snapshot-restart draws. `None` draws one.
        **kwargs: Passed to `keras.Model`.
    """

    def __init__(self, *, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self.seed = int(seed)
        # Counter of the restart draws, saved with the model, so that a resumed
        # run draws what an uninterrupted one would have.
        self.restart_draws = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            name="restart_draws",
        )
        self._groups = None

    # ------------------------------------------------------------------ #
    # What a game declares.
    # ------------------------------------------------------------------ #
    def players(self) -> dict[str, list]:
        """Ordered mapping `player name -> trainable variables it owns`."""
        raise NotImplementedError("A Game subclass must implement `players()`.")

    def compute_player_losses(self, data, training: bool = True) -> dict:
        """Each player's loss on one minibatch, from one forward pass."""
        raise NotImplementedError(
            "A Game subclass must implement `compute_player_losses(data, training)`."
        )

    # ------------------------------------------------------------------ #
    # Compile.
    # ------------------------------------------------------------------ #
    def compile(
        self,
        optimizer=None,
        *,
        update_point: str = "extrapolated",
        one_minibatch: bool = False,
        jit_compile="auto",
        steps_per_execution: int = 1,
        **player_optimizers,
    ):
        """Chooses the method (through the optimizers) and the step options.

        Args:
            optimizer: One optimizer for all players. Or give one per player
                as `<player>_optimizer=...` (e.g. `generator_optimizer`).
                All optimizers must be of the same family (plain Keras,
                `Extragradient` or `SVRE`).
            update_point: Where the update gradient is evaluated.
                `"extrapolated"` (Algorithm 1 of the paper): every player at
                the joint extrapolated point. `"opponent_extrapolated"` (the
                authors' reference code): each player at its own current
                weights against the others' extrapolated weights (one more
                forward pass per extra player).
            one_minibatch: Extragradient methods only: use one minibatch for
                both the extrapolation and the update, so an SVRE iteration
                needs F(snapshot) once (3 evaluations instead of 4).
            jit_compile: Passed to `keras.Model.compile`.
            steps_per_execution: Passed to `keras.Model.compile`. Snapshot
                restarts are drawn between executions (one Bernoulli draw per
                iteration, so the rate is unchanged).
            **player_optimizers: `<player>_optimizer` arguments.
        """
        names = list(self.players())
        if update_point not in UPDATE_POINTS:
            raise ValueError(
                f"Argument `update_point` must be one of {UPDATE_POINTS}. "
                f"Received: update_point={update_point!r}."
            )
        unknown = set(player_optimizers) - {f"{n}_optimizer" for n in names}
        if unknown:
            raise ValueError(
                f"Unknown compile arguments {sorted(unknown)}. This game's players "
                f"are {names}: pass `optimizer=` or "
                f"{', '.join(f'`{n}_optimizer=`' for n in names)}."
            )
        if optimizer is not None and player_optimizers:
            raise ValueError(
                "Pass either `optimizer` (one for all players) or one "
                "`<player>_optimizer` per player, not both."
            )
        if optimizer is None and not player_optimizers:
            raise ValueError(
                "No optimizer given: pass `optimizer=keras_svre.SVRE(...)` or "
                f"one per player ({', '.join(f'{n}_optimizer' for n in names)})."
            )
        if player_optimizers and len(player_optimizers) != len(names):
            missing = [n for n in names if f"{n}_optimizer" not in player_optimizers]
            raise ValueError(f"No optimizer given for player(s) {missing}.")

        if optimizer is not None:
            optimizer = keras.optimizers.get(optimizer)
            given = [(optimizer, names)]
        else:
            given = [
                (keras.optimizers.get(player_optimizers[f"{n}_optimizer"]), [n])
                for n in names
            ]
        dynamic_scaling = self._dynamic_loss_scaling([opt for opt, _ in given])
        # A `LossScaleOptimizer` is recognised: the game runs its dynamic
        # scaling (below) and the method is its inner optimizer's.
        groups = [(_unwrap(opt), members) for opt, members in given]
        optimizers = [opt for opt, _ in groups]
        if len({id(o) for o in optimizers}) != len(optimizers):
            raise ValueError(
                "The same optimizer instance was given for several players: "
                "pass `optimizer=` once for all players, or a separate instance "
                "per player."
            )
        families = {self._family(o) for o in optimizers}
        if len(families) > 1:
            raise ValueError(
                "All players must use the same family of method (plain Keras, "
                f"`Extragradient` or `SVRE`). Received: {sorted(families)}."
            )
        self.method_family = families.pop()
        if one_minibatch and self.method_family == "simultaneous":
            raise ValueError(
                "`one_minibatch=True` only applies to extragradient methods "
                "(Extragradient, SVRE)."
            )

        super().compile(
            optimizer=optimizers[0],
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
            # Keras would wrap the optimizer in a LossScaleOptimizer under
            # mixed_float16, which the game's own step never calls: the game
            # scales the losses itself (`_dynamic_loss_scaling`).
            auto_scale_loss=False,
        )
        self._game_optimizers = optimizers
        self.update_point = update_point
        self.one_minibatch = bool(one_minibatch)

        player_vars = self.players()
        self._player_names = names
        self._game_variables = [v for n in names for v in player_vars[n]]
        if not self._game_variables:
            raise ValueError(
                "The game's players own no variables: build the networks "
                "before compiling (e.g. call them once on a batch)."
            )
        offsets, start = {}, 0
        for n in names:
            offsets[n] = (start, start + len(player_vars[n]))
            start += len(player_vars[n])
        self._player_ranges = offsets
        self._groups = []
        for opt, members in groups:
            indices = [i for n in members for i in range(*offsets[n])]
            # Built here, not lazily at the first apply: the train step reads
            # the slots (snapshot, mean gradient) before any update.
            opt.build([self._game_variables[i] for i in indices])
            self._groups.append((opt, indices))
        self._loss_trackers = {n: keras.metrics.Mean(name=f"{n}_loss") for n in names}
        # `loss`: the sum of the players' losses. It means little by itself,
        # but it is non-finite when any player's loss is or when an iteration
        # was skipped for non-finite gradients, so that Keras' own
        # `TerminateOnNaN` (which reads `logs["loss"]`) works on games.
        self._total_loss_tracker = keras.metrics.Mean(name="loss")
        self._dynamic_scaling = dynamic_scaling
        if dynamic_scaling is not None:
            self._make_loss_scale_state(dynamic_scaling["initial_scale"])
            self._loss_scales = {n: self._scale_loss for n in names}
        else:
            self._loss_scales = {
                n: opt.scale_loss for opt, members in groups for n in members
            }
        self._compile_args = {
            "update_point": update_point,
            "one_minibatch": self.one_minibatch,
            "jit_compile": jit_compile,
            "steps_per_execution": steps_per_execution,
        }
        if optimizer is not None:
            self._compile_optimizers = {"optimizer": optimizer}
        else:
            self._compile_optimizers = {f"{n}_optimizer": opt for (opt, (n,)) in given}
        self.built = True

    def _dynamic_loss_scaling(self, optimizers):
        """The dynamic loss scaling the game runs, or `None`.

        On when the optimizers are wrapped in `keras.optimizers.
        LossScaleOptimizer` (its `initial_scale` and `dynamic_growth_steps`),
        or when the game's dtype policy is `mixed_float16` and no optimizer
        has an explicit `loss_scale_factor` (Keras' defaults). An explicit
        `loss_scale_factor` is a fixed scale and is kept.
        """
        wrapped = [o for o in optimizers if isinstance(o, _LossScaleOptimizer)]
        if wrapped:
            if len(wrapped) != len(optimizers):
                raise ValueError(
                    "Either every player's optimizer is wrapped in a "
                    "`LossScaleOptimizer` or none is: the game scales all "
                    "players' losses with one dynamic scale. Received "
                    f"{len(wrapped)} wrapped of {len(optimizers)}."
                )
            settings = {(o.initial_scale, o.dynamic_growth_steps) for o in wrapped}
            if len(settings) > 1:
                raise ValueError(
                    "The players' `LossScaleOptimizer`s must have the same "
                    "`initial_scale` and `dynamic_growth_steps` (the game keeps "
                    f"one dynamic scale). Received: {sorted(settings)}."
                )
            initial_scale, growth_steps = settings.pop()
        elif self.dtype_policy.name == "mixed_float16" and all(
            o.loss_scale_factor is None for o in optimizers
        ):
            initial_scale, growth_steps = 2.0**15, 2000
        else:
            return None
        if not initial_scale > 0 or int(growth_steps) < 1:
            raise ValueError(
                "Dynamic loss scaling needs `initial_scale > 0` and "
                "`dynamic_growth_steps >= 1`. Received: "
                f"initial_scale={initial_scale}, "
                f"dynamic_growth_steps={growth_steps}."
            )
        return {
            "initial_scale": float(initial_scale),
            "growth_steps": int(growth_steps),
        }

    def _make_loss_scale_state(self, initial_scale):
        """The dynamic loss scale and its count of good steps, saved with the game."""
        if getattr(self, "loss_scale", None) is not None:
            return
        self.loss_scale = self.add_weight(
            shape=(),
            dtype="float32",
            initializer=keras.initializers.Constant(initial_scale),
            trainable=False,
            name="loss_scale",
            aggregation="only_first_replica",
        )
        self.loss_scale_good_steps = self.add_weight(
            shape=(),
            dtype="int64",
            initializer="zeros",
            trainable=False,
            name="loss_scale_good_steps",
            aggregation="only_first_replica",
        )

    @property
    def dynamic_loss_scaling(self) -> bool:
        """Whether the game runs dynamic loss scaling (mixed_float16)."""
        return getattr(self, "_dynamic_scaling", None) is not None

    @staticmethod
    def _family(optimizer):
        if isinstance(optimizer, SVRE):
            return "svre"
        if isinstance(optimizer, Extragradient):
            return "extragradient"
        return "simultaneous"

    def get_compile_config(self):
        if not self.compiled:
            return {}
        config = dict(self._compile_args)
        for key, opt in self._compile_optimizers.items():
            config[key] = keras.optimizers.serialize(opt)
        return config

    def compile_from_config(self, config):
        config = dict(config)
        for key in list(config):
            if key == "optimizer" or key.endswith("_optimizer"):
                config[key] = keras.optimizers.deserialize(config[key])
        self.compile(**config)

    @property
    def metrics(self):
        trackers = getattr(self, "_loss_trackers", None) or {}
        total = getattr(self, "_total_loss_tracker", None)
        return ([total] if total is not None else []) + list(trackers.values())

    def _scale_loss(self, loss):
        return loss * ops.cast(self.loss_scale, loss.dtype)

    @property
    def game_optimizers(self) -> list:
        """The compiled optimizers, one per group of players."""
        return list(self._game_optimizers)

    @property
    def minibatches_per_iteration(self) -> int:
        """How many dataset batches one train step consumes."""
        if self.method_family == "simultaneous" or self.one_minibatch:
            return 1
        return 2

    # ------------------------------------------------------------------ #
    # Evaluating the game's vector field.
    # ------------------------------------------------------------------ #
    def _current_point(self):
        return [tf.convert_to_tensor(v) for v in self._game_variables]

    def _field(self, data, point, commit_state=False, players=None):
        """Each player's gradient of its own loss, at `point`, on `data`.

        One forward pass computes every player's loss; one persistent tape
        gives every player's gradient.

        Args:
            data: One minibatch.
            point: Values for `self._game_variables` (tensors).
            commit_state: Whether to write the non-trainable state the forward
                pass produced (only the current-point evaluation does).
            players: The players whose gradients are wanted (default: all);
                the others' entries are `None`.

        Returns:
            `(gradients, losses)`: a list aligned with `self._game_variables`
            and the dict of player losses.
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
            lo, hi = self._player_ranges[name]
            grads = tape.gradient(
                scaled[name],
                point[lo:hi],
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            if self.dynamic_loss_scaling:
                # The dynamic scale is the game's: it unscales here (a fixed
                # `loss_scale_factor` is divided out by the optimizers).
                grads = [g / ops.cast(self.loss_scale, g.dtype) for g in grads]
            gradients[lo:hi] = grads
        del tape
        if commit_state:
            for variable in self.non_trainable_variables:
                value = scope.get_current_value(variable)
                if value is not None:
                    variable.assign(value)
        return gradients, losses

    def _all_reduce_mean(self, gradients):
        """Global-batch gradients under a distribution strategy (no-op otherwise)."""
        context = tf.distribute.get_replica_context()
        strategy = tf.distribute.get_strategy()
        if context is None or strategy.num_replicas_in_sync == 1:
            return gradients
        return context.all_reduce(tf.distribute.ReduceOp.MEAN, gradients)

    def _gradients_at(self, data, point, commit_state=False, players=None):
        gradients, losses = self._field(data, point, commit_state, players)
        present = [i for i, g in enumerate(gradients) if g is not None]
        reduced = self._all_reduce_mean([gradients[i] for i in present])
        for i, g in zip(present, reduced):
            gradients[i] = g
        return gradients, losses

    def _snapshot_point(self):
        point = [None] * len(self._game_variables)
        for opt, indices in self._groups:
            values = opt.snapshot_values([self._game_variables[i] for i in indices])
            for i, value in zip(indices, values):
                point[i] = value
        return point

    def _variance_reduced(self, gradients, snapshot_gradients):
        directions = [None] * len(gradients)
        for opt, indices in self._groups:
            variables = [self._game_variables[i] for i in indices]
            values = opt.variance_reduced_gradient(
                [gradients[i] for i in indices],
                [snapshot_gradients[i] for i in indices],
                variables,
            )
            for i, value in zip(indices, values):
                directions[i] = value
        return directions

    def _extrapolate(self, directions):
        point = [None] * len(directions)
        for opt, indices in self._groups:
            variables = [self._game_variables[i] for i in indices]
            values = opt.extrapolate([directions[i] for i in indices], variables)
            for i, value in zip(indices, values):
                point[i] = value
        return point

    def _apply(self, directions):
        # Keras sums the gradients given to `apply` over replicas; ours are
        # already the global mean, so each replica passes its share.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # The updates must not start before every evaluation of the step has
        # finished reading the variables: automatic control dependencies order
        # the reads and the writes, not the reads' consumers, and without this
        # the results varied from run to run (seen on CPU, TF 2.21).
        with tf.control_dependencies([d for d in directions if d is not None]):
            directions = [None if d is None else tf.identity(d) for d in directions]
            self._apply_updates(directions, replicas)

    def _apply_updates(self, directions, replicas):
        for opt, indices in self._groups:
            variables = [self._game_variables[i] for i in indices]
            grads = [directions[i] for i in indices]
            if replicas > 1:
                # Keras clips each replica's share before summing the shares:
                # clip the global direction here (as on one device), so that
                # the shares pass Keras' clipping unchanged.
                grads = [g / replicas for g in opt._clip_gradients(grads)]
            if isinstance(opt, Extragradient):
                with opt.game_step():
                    opt.apply(grads, variables)
            else:
                opt.apply(grads, variables)

    def _update_field(self, data, half_point):
        """The update's field: at the joint extrapolated point, or per player."""
        if self.update_point == "extrapolated":
            return self._gradients_at(data, half_point)[0]
        current = self._current_point()
        gradients = [None] * len(current)
        for name in self._player_names:
            lo, hi = self._player_ranges[name]
            point = list(half_point)
            point[lo:hi] = current[lo:hi]
            grads, _ = self._gradients_at(data, point, players=[name])
            gradients[lo:hi] = grads[lo:hi]
        return gradients

    def gradient_estimate(self, data) -> dict:
        """The method's estimate of the game's field on one minibatch, at the current point.

        `F_i(w)` for simultaneous and extragradient methods; for SVRE the
        variance-reduced `F_i(w) - F_i(w_S) + mu_S`. Nothing is updated. Used
        to measure the estimate's second moment and variance across
        minibatches (the variance reduction made visible).

        Returns:
            A dict `player name -> list of gradient tensors`.
        """
        gradients, _ = self._field(data, self._current_point())
        if self.method_family == "svre":
            snapshot_gradients, _ = self._field(data, self._snapshot_point())
            gradients = self._variance_reduced(gradients, snapshot_gradients)
        return {
            name: gradients[lo:hi] for name, (lo, hi) in self._player_ranges.items()
        }

    # ------------------------------------------------------------------ #
    # The train step.
    # ------------------------------------------------------------------ #
    def train_step(self, data):
        if self._groups is None:
            raise RuntimeError("Compile the game before training it.")
        k = self.minibatches_per_iteration
        first = _take(data, 0) if k > 1 else data
        second = _take(data, 1) if k > 1 else data

        # Every gradient the iteration computes: if any is non-finite, the
        # whole iteration (extrapolation included) is skipped.
        computed = []
        if self.method_family == "svre":
            snapshot = self._snapshot_point()
            g_snap, _ = self._gradients_at(first, snapshot)
            g, losses = self._gradients_at(first, self._current_point(), True)
            computed += [g_snap, g]
            half = self._extrapolate(self._variance_reduced(g, g_snap))
            if not self.one_minibatch:
                g_snap, _ = self._gradients_at(second, snapshot)
                computed.append(g_snap)
            g_half = self._update_field(second, half)
            computed.append(g_half)
            directions = self._variance_reduced(g_half, g_snap)
        elif self.method_family == "extragradient":
            g, losses = self._gradients_at(first, self._current_point(), True)
            half = self._extrapolate(g)
            directions = self._update_field(second, half)
            computed += [g, directions]
        else:
            g, losses = self._gradients_at(first, self._current_point(), True)
            directions = g
            computed.append(g)
        finite_losses = _all_finite(list(losses.values()))
        finite = tf.logical_and(
            finite_losses, _all_finite([t for grads in computed for t in grads])
        )
        self._apply_if_finite(directions, finite)

        for name in self._player_names:
            self._loss_trackers[name].update_state(losses[name])
        total = tf.add_n([ops.cast(losses[n], "float32") for n in self._player_names])
        if self.dynamic_loss_scaling:
            # An overflow of the scaled gradients is not an error: the
            # iteration is skipped and the scale halved. Non-finite losses are.
            nan = tf.constant(float("nan"), total.dtype)
            total = tf.where(finite_losses, total, nan)
        else:
            total = tf.where(finite, total, tf.constant(float("nan"), total.dtype))
        self._total_loss_tracker.update_state(total)
        # Shape-[1] logs under multi-worker training (keras-team/keras#20585).
        return distribute.logs_for_reduction({m.name: m.result() for m in self.metrics})

    def _apply_if_finite(self, directions, finite):
        """Applies the iteration's update if `finite`; else skips it.

        Skipping leaves the weights, the optimizers' state and their
        iteration counts as they were (non-trainable state the forward pass
        produced, e.g. BatchNorm's moving statistics, is kept, as under
        Keras' `LossScaleOptimizer`). With dynamic loss scaling, a skipped
        iteration halves the scale and `growth_steps` applied ones in a row
        double it.
        """

        def apply():
            self._apply(directions)
            self._after_update()
            if self.dynamic_loss_scaling:
                grown = self.loss_scale_good_steps + 1
                grow = grown >= self._dynamic_scaling["growth_steps"]
                self.loss_scale.assign(
                    tf.where(grow, self.loss_scale * 2.0, self.loss_scale)
                )
                self.loss_scale_good_steps.assign(
                    tf.where(grow, tf.zeros_like(grown), grown)
                )
            return tf.constant(True)

        def skip():
            if self.dynamic_loss_scaling:
                self.loss_scale.assign(self.loss_scale * 0.5)
                self.loss_scale_good_steps.assign(
                    tf.zeros_like(self.loss_scale_good_steps)
                )
            return tf.constant(False)

        context = tf.distribute.get_replica_context()
        strategy = tf.distribute.get_strategy()
        if context is None or strategy.num_replicas_in_sync == 1:
            tf.cond(finite, apply, skip)
            return

        # Keras' optimizers merge across replicas inside `apply`, which a
        # `cond` in replica context cannot hold: decide in cross-replica
        # context (every replica has the same `finite`, the gradients being
        # all-reduced), as Keras' LossScaleOptimizer does.
        def decide(distribution, finite):
            first = distribution.experimental_local_results(finite)[0]

            def apply_on_replicas():
                distribution.extended.call_for_each_replica(apply)
                return tf.constant(True)

            def skip_on_replicas():
                distribution.extended.call_for_each_replica(skip)
                return tf.constant(False)

            return tf.cond(first, apply_on_replicas, skip_on_replicas)

        context.merge_call(decide, args=(finite,))

    def _after_update(self):
        """Hook: runs after each applied iteration (not after a skipped one)."""

    # ------------------------------------------------------------------ #
    # Snapshots.
    # ------------------------------------------------------------------ #
    @property
    def svre_optimizers(self) -> list:
        return [opt for opt, _ in self._groups or [] if isinstance(opt, SVRE)]

    def _group_variables(self, indices):
        return [self._game_variables[i] for i in indices]

    def draw_uniform(self) -> float:
        """The next restart draw: a uniform number from (seed, draw counter)."""
        counter = int(self.restart_draws.numpy())
        self.restart_draws.assign(counter + 1)
        return float(np.random.default_rng([self.seed, counter]).random())

    def take_snapshot(self, snapshot_data, restart: bool = True):
        """Takes a snapshot and computes its mean gradient over `snapshot_data`.

        With restarts from the average configured, the iterate first restarts
        from the uniform average of the iterates with probability
        `average_restart_probability` (drawn once for all players).

        Args:
            snapshot_data: The finite-sum dataset (a finite `tf.data.Dataset`
                of minibatches, each example exactly once).
            restart: Whether a restart from the average may be drawn.
        """
        if not self.svre_optimizers:
            raise ValueError("Only games compiled with SVRE take snapshots.")
        first = int(self.svre_optimizers[0].snapshots_taken.numpy()) == 0
        average_q = max(o.average_restart_probability for o in self.svre_optimizers)
        if average_q > 0:
            do_restart = restart and not first and self.draw_uniform() < average_q
            for opt, indices in self._groups:
                if not opt.keeps_average:
                    continue
                variables = self._group_variables(indices)
                if first:
                    opt.reset_average(variables)
                elif do_restart:
                    opt.restart_from_average(variables)
        for opt, indices in self._groups:
            opt.take_snapshot(self._group_variables(indices))
        mean = self.snapshot_mean_gradient(snapshot_data)
        # Under dynamic loss scaling an overflow in the snapshot pass would
        # make every later direction non-finite: halve the scale and redo the
        # pass, as a skipped iteration would (down to a scale of 1).
        while (
            self.dynamic_loss_scaling
            and not bool(_all_finite(mean))
            and float(self.loss_scale.numpy()) > 1.0
        ):
            self.loss_scale.assign(self.loss_scale * 0.5)
            self.loss_scale_good_steps.assign(0)
            mean = self.snapshot_mean_gradient(snapshot_data)
        for opt, indices in self._groups:
            opt.set_mean_gradient(
                [mean[i] for i in indices], self._group_variables(indices)
            )

    def snapshot_mean_gradient(self, snapshot_data):
        """Full-data mean of the game's field at the current point.

        Iterates the whole finite-sum dataset in one `tf.function` (and under
        a distribution strategy, across all replicas and workers), weighting
        each batch by its number of examples.
        """
        fn = self._snapshot_pass_functions.get(id(snapshot_data))
        if fn is None:
            fn = self._make_snapshot_pass(snapshot_data)
            self._snapshot_pass_functions[id(snapshot_data)] = fn
        return fn()

    @property
    def _snapshot_pass_functions(self):
        cache = self.__dict__.get("_snapshot_pass_cache")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_snapshot_pass_cache", cache)
        return cache

    def _make_snapshot_pass(self, snapshot_data):
        strategy = self.distribute_strategy
        # DATA sharding: the finite-sum indices must survive multi-worker input.
        distributed = strategy.experimental_distribute_dataset(
            distribute.shard_by_data(snapshot_data)
        )
        variables = self._game_variables

        def batch_sums(batch):
            n = _batch_size(batch)
            grads, _ = self._field(batch, self._current_point())
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
    # Fit.
    # ------------------------------------------------------------------ #
    def fit(self, x=None, y=None, *, snapshot_data=None, callbacks=None, **kwargs):
        """Trains the game with Keras' `fit`.

        Args:
            x: A `tf.data.Dataset` of minibatches (the finite sum: each
                element is one minibatch i). Extragradient methods consume two
                consecutive minibatches per iteration (i for the
                extrapolation, j for the update), so an epoch has half as many
                iterations as batches.
            y: Unused (must be `None`; the game's data is all in `x`).
            snapshot_data: SVRE only: the finite dataset the snapshot pass
                iterates (each example once; a larger batch size is fine).
                Defaults to `x`, which must then be finite.
            callbacks: Keras callbacks. `LearningRateScheduler` and
                `ReduceLROnPlateau` act on every player's optimizer; monitors
                of the game's losses need no `mode` (they are minimised).
            **kwargs: Passed to `keras.Model.fit` (`epochs`,
                `steps_per_epoch`, `verbose`, `initial_epoch`,
                `validation_data` (minibatches like `x`; see `test_step`),
                ...).

        Returns:
            The Keras `History`.

        Raises:
            ValueError: for data the game cannot train on (checked before
                training where possible).
            keras_svre.callbacks.NonFiniteLossError: when an iteration's
                losses or gradients are NaN or infinite.
        """
        if self._groups is None:
            raise RuntimeError(
                "Compile the game before fitting it, e.g. "
                "`game.compile(optimizer=keras_svre.SVRE(0.01))`."
            )
        if not isinstance(x, tf.data.Dataset):
            raise TypeError(
                "A Game trains on a `tf.data.Dataset` of minibatches "
                f"(received {type(x).__name__}). Build one with "
                "`tf.data.Dataset.from_tensor_slices(...).batch(batch_size)`, or "
                "use `keras_svre.data.load(...)`."
            )
        if y is not None:
            raise ValueError("`y` is not used by a Game: put all the data in `x`.")
        k = self.minibatches_per_iteration
        # Everything that can be checked is, before any training (or
        # snapshot pass) starts.
        self.check_data(x, "training dataset")
        n = int(x.cardinality())
        if 0 <= n < k:
            raise ValueError(
                f"One iteration of this method uses {k} minibatches but the "
                f"training dataset has {n}: give more data or a smaller batch size."
            )
        if k > 1 and n > 0 and n % k == 0 and _batch_sizes_may_differ(x):
            # The last pair would stack a short minibatch with a full one;
            # found now rather than after an epoch (or a snapshot pass).
            if _batch_size_of(x.take(1)) != _batch_size_of(x.skip(n - 1)):
                raise ValueError(_UNEQUAL_MINIBATCHES.format(k=k))
        validation = kwargs.get("validation_data")
        if validation is not None:
            if not isinstance(validation, tf.data.Dataset):
                raise TypeError(
                    "A Game's `validation_data` must be a `tf.data.Dataset` of "
                    "minibatches like the training data. Received: "
                    f"{type(validation).__name__}."
                )
            self.check_data(validation, "validation dataset")
        callbacks = self._game_callbacks(callbacks)
        if self.method_family == "svre":
            snapshot_data = x if snapshot_data is None else snapshot_data
            _check_finite(snapshot_data)
            self.check_data(snapshot_data, "snapshot dataset")
            schedule = SnapshotSchedule(snapshot_data, self._restart_probability(x))
            callbacks.insert(0, schedule)
        elif snapshot_data is not None:
            raise ValueError("`snapshot_data` is only used by SVRE.")
        if k > 1:
            x = x.batch(k, drop_remainder=True).map(_swap_minibatch_axis)
        x = distribute.shard_by_data(x)  # Keeps the finite-sum indices (multi-worker).
        with self._explained_data_errors(k):
            return super().fit(x, callbacks=callbacks, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        """Each player's loss on held-out minibatches (see `test_step`)."""
        if self._groups is None:
            raise RuntimeError("Compile the game before evaluating it.")
        if not isinstance(x, tf.data.Dataset):
            raise TypeError(
                "A Game evaluates on a `tf.data.Dataset` of minibatches like its "
                f"training data. Received: {type(x).__name__}."
            )
        if y is not None:
            raise ValueError("`y` is not used by a Game: put all the data in `x`.")
        self.check_data(x, "evaluation dataset")
        with self._explained_data_errors(1):
            return super().evaluate(x, **kwargs)

    def test_step(self, data):
        """The players' losses on one held-out minibatch; nothing is updated."""
        losses = self.compute_evaluation_losses(data)
        for name in self._player_names:
            self._loss_trackers[name].update_state(losses[name])
        total = tf.add_n([ops.cast(losses[n], "float32") for n in self._player_names])
        self._total_loss_tracker.update_state(total)
        return distribute.logs_for_reduction({m.name: m.result() for m in self.metrics})

    def compute_evaluation_losses(self, data) -> dict:
        """Each player's loss on a held-out minibatch (inference mode).

        Defaults to `compute_player_losses(data, training=False)`; a game
        whose losses depend on training-only state (the GAN's noise bank,
        indexed by training example) overrides it.
        """
        return self.compute_player_losses(data, training=False)

    def check_data(self, dataset, what: str) -> None:
        """Refuses, in one sentence, a dataset this game cannot train on.

        `Game` checks that the dataset is not empty; subclasses add checks of
        the elements' structure (see `GAN.check_data`).

        Args:
            dataset: A `tf.data.Dataset` of minibatches.
            what: How to name it in the message (e.g. "training dataset").
        """
        if int(dataset.cardinality()) == 0:
            raise ValueError(
                f"The {what} is empty (0 minibatches). If it was batched with "
                "`drop_remainder=True`, the batch size may be larger than the "
                "number of examples."
            )

    @contextlib.contextmanager
    def _explained_data_errors(self, k):
        """Turns TensorFlow's errors about the data into one sentence each."""
        try:
            yield
        except tf.errors.InvalidArgumentError as e:
            text = str(e)
            if k > 1 and "Cannot batch tensors with different shapes" in text:
                raise ValueError(_UNEQUAL_MINIBATCHES.format(k=k)) from None
            for marker, message in self._data_error_messages().items():
                if marker in text:
                    raise ValueError(message) from None
            raise

    def _data_error_messages(self) -> dict:
        """`{marker in a TensorFlow error: the sentence that explains it}`."""
        return {}

    # ------------------------------------------------------------------ #
    # Callbacks that assume one optimizer, and non-finite values.
    # ------------------------------------------------------------------ #
    @property
    def learning_rate(self):
        """The first player's learning rate; setting it scales every player's.

        Keras' callbacks (`LearningRateScheduler`, `ReduceLROnPlateau`) read
        and write `model.optimizer.learning_rate`, which is the first
        optimizer's. `Game.fit` hands them every player's optimizer instead
        (each is scheduled from its own rate). Setting this property sets the
        first optimizer's rate to `value` and multiplies the others' by the
        same factor, so the players' ratios are kept.
        """
        return self._groups[0][0].learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        first = float(ops.convert_to_numpy(self._groups[0][0].learning_rate))
        factor = float(value) / first
        for opt, _ in self._groups:
            current = float(ops.convert_to_numpy(opt.learning_rate))
            opt.learning_rate = current * factor

    @property
    def player_learning_rates(self) -> dict:
        """`{player: learning rate}` (players sharing an optimizer share one)."""
        rates = {}
        for opt, indices in self._groups:
            for name, (lo, _) in self._player_ranges.items():
                if lo in indices:
                    rates[name] = float(ops.convert_to_numpy(opt.learning_rate))
        return rates

    def _game_callbacks(self, callbacks):
        callbacks = list(callbacks or [])
        for i, callback in enumerate(callbacks):
            if getattr(callback, "mode", None) == "auto" and isinstance(
                getattr(callback, "monitor", None), str
            ):
                # A game's losses are minimised: say so, as Keras' compiled
                # losses do, so `mode` need not be given.
                if callback.monitor.removeprefix("val_") in self._loss_names():
                    callback.mode = "min"
            if len(self._groups) > 1 and isinstance(callback, _LR_CALLBACKS):
                callbacks[i] = _EveryPlayer(callback)
        # Last, so that the user's callbacks (checkpoints, TerminateOnNaN)
        # see the failing batch first.
        callbacks.append(_StopOnNonFinite())
        return callbacks

    def _loss_names(self):
        return ["loss"] + [f"{name}_loss" for name in self._player_names]

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras' TensorFlow trainer builds a model from its first batch before
        # `fit` under a strategy; a Game is fully built by `compile` (variables
        # and optimizer slots), so there is nothing to build. Skipping it also
        # avoids keras-team/keras#20585: under MultiWorkerMirroredStrategy that
        # build reduces the first distributed batch, which raises. Pinned by
        # tests/test_distribute.py (two-worker fit).
        return

    def _restart_probability(self, dataset):
        configured = {o.restart_probability for o in self.svre_optimizers}
        if configured != {None}:
            return max(p for p in configured if p is not None)
        n = int(dataset.cardinality())
        if n <= 0:
            raise ValueError(
                "SVRE's default restart probability is 1/n, n = minibatches per "
                "pass, but the training dataset's length is unknown or infinite. "
                "Pass `SVRE(restart_probability=...)` explicitly, or give a "
                "dataset of known length."
            )
        return 1.0 / n


_LR_CALLBACKS = (
    keras.callbacks.LearningRateScheduler,
    keras.callbacks.ReduceLROnPlateau,
)


class _AllOptimizers:
    """What Keras' learning-rate callbacks look for to act on several optimizers."""

    def __init__(self, optimizers):
        self.optimizers = list(optimizers)

    @property
    def learning_rate(self):
        return self.optimizers[0].learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        for opt in self.optimizers:
            opt.learning_rate = value


class _GameView:
    """The game, except that `optimizer` is every player's optimizer."""

    def __init__(self, game):
        object.__setattr__(self, "_game", game)
        object.__setattr__(self, "optimizer", _AllOptimizers(game.game_optimizers))

    def __getattr__(self, name):
        return getattr(self._game, name)

    def __setattr__(self, name, value):
        setattr(self._game, name, value)


class _EveryPlayer(keras.callbacks.Callback):
    """Runs a learning-rate callback on every player's optimizer.

    `LearningRateScheduler` and `ReduceLROnPlateau` act on each optimizer in
    `model.optimizer.optimizers` when there is such a list; this gives them
    one, through a view of the game.
    """

    def __init__(self, callback):
        super().__init__()
        self.callback = callback

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(_GameView(model))

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)


def _forward(hook):
    def method(self, *args, **kwargs):
        return getattr(self.callback, hook)(*args, **kwargs)

    method.__name__ = hook
    return method


for _hook in [name for name in dir(keras.callbacks.Callback) if name.startswith("on_")]:
    setattr(_EveryPlayer, _hook, _forward(_hook))


class _StopOnNonFinite(keras.callbacks.Callback):
    """Stops `fit` when an iteration was non-finite, then raises `NonFiniteLossError`.

    `Game.fit` adds it last. Training stops after the failing batch; the
    error is raised at the end of training, once every callback has closed
    what it holds (log files, for instance).
    """

    def on_train_begin(self, logs=None):
        self.error = None

    def on_train_end(self, logs=None):
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.error is not None or loss is None or np.all(np.isfinite(loss)):
            return
        game = self.model
        failed = int(game.game_optimizers[0].iterations.numpy()) + 1
        bad = [
            name
            for name in game._player_names
            if not np.all(np.isfinite(logs.get(f"{name}_loss", 0.0)))
        ]
        what = (
            f"the loss of {', '.join(bad)}" if bad else "a gradient"
        ) + " was NaN or infinite"
        weights_ok = all(np.all(np.isfinite(v.numpy())) for v in game._game_variables)
        kept = (
            f"the iteration was not applied: the game holds the weights after "
            f"iteration {failed - 1}"
            if weights_ok
            else "the weights are already non-finite (an update overflowed): "
            "reload a checkpoint"
        )
        self.error = NonFiniteLossError(
            f"Training stopped at iteration {failed}: {what}; {kept}. Check the "
            "data for NaN or infinite values, or use a smaller learning rate."
        )
        self.model.stop_training = True


_UNEQUAL_MINIBATCHES = (
    "This method stacks {k} consecutive minibatches per iteration, so all "
    "training minibatches must have the same size, but the last is smaller "
    "(batched without `drop_remainder=True`). Batch the training data with "
    "`.batch(batch_size, drop_remainder=True)`; the snapshot data may keep its "
    "remainder."
)


def _batch_sizes_may_differ(dataset):
    """Whether the minibatches' size is not fixed by the dataset's spec."""
    return any(
        spec.shape.rank and spec.shape[0] is None
        for spec in tf.nest.flatten(dataset.element_spec)
        if isinstance(spec, tf.TensorSpec)
    )


def _batch_size_of(dataset):
    """The size of the first minibatch of `dataset` (reads one element)."""
    for element in dataset.take(1):
        return int(_batch_size(element))
    return None


def _all_finite(tensors):
    checks = [tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None]
    return tf.reduce_all(tf.stack(checks)) if checks else tf.constant(True)


def _unwrap(optimizer):
    if isinstance(optimizer, _LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


_LossScaleOptimizer = keras.optimizers.LossScaleOptimizer


def _check_finite(dataset):
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


class SnapshotSchedule(keras.callbacks.Callback):
    """Takes SVRE's snapshots: one before training, then Bernoulli(p) restarts.

    `Game.fit` adds it for SVRE. After each iteration a new snapshot (with
    its full pass) is taken with probability `p`; the draws come from the
    game's seed and a counter saved with the model, so they are the same on
    every replica and worker and a resumed run repeats them.

    Args:
        snapshot_data: The finite-sum dataset of the snapshot pass.
        restart_probability: The per-iteration snapshot probability.
    """

    def __init__(self, snapshot_data, restart_probability: float):
        super().__init__()
        self.snapshot_data = snapshot_data
        self.restart_probability = float(restart_probability)
        self._last_iteration = None
        self.snapshots_taken = 0

    def _iterations(self):
        return int(self.model.game_optimizers[0].iterations.numpy())

    def on_train_begin(self, logs=None):
        if int(self.model.svre_optimizers[0].snapshots_taken.numpy()) == 0:
            self.model.take_snapshot(self.snapshot_data)
            self.snapshots_taken += 1
        self._last_iteration = self._iterations()

    def on_train_batch_end(self, batch, logs=None):
        now = self._iterations()
        steps = max(now - self._last_iteration, 0)
        self._last_iteration = now
        if steps == 0:
            return
        # With steps_per_execution > 1 several iterations ran: any of their
        # draws succeeding triggers one snapshot now.
        threshold = 1.0 - math.pow(1.0 - self.restart_probability, steps)
        if self.model.draw_uniform() < threshold:
            self.model.take_snapshot(self.snapshot_data)
            self.snapshots_taken += 1
