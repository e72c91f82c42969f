"""The generic two-player (n-player) game: compile, the train step, fit."""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

from keras_svre import callbacks as game_callbacks
from keras_svre import optimizers as game_optimizers
from keras_svre.game import alternating, compiling, loss_scaling, snapshots
from keras_svre.game import backend as game_backend
from keras_svre.game import data as game_data
from keras_svre.game.backend import GameTrainer
from keras_svre.game.compiled import CompiledGame
from keras_svre.game.compiling import UPDATE_POINTS  # noqa: F401  (API)


class Game(CompiledGame, GameTrainer, keras.Model):
    """A differentiable game whose players are trained with `fit`.

    A game has players, each owning some trainable variables and minimising
    its own loss. Subclasses say who the players are and what their losses
    are on a minibatch; the train step is this class's and serves every method.
    The step follows what the optimizers declare (see
    `keras_svre.optimizers.GameOptimizer`):

    - a plain Keras optimizer (`SGD`, `Adam`, ...): simultaneous gradient
      steps (SGDA), one minibatch per iteration;
    - an optimizer that `extrapolates` (`keras_svre.Extragradient`: SE,
      SE-A): two minibatches per iteration, i for the extrapolation, j for
      the update;
    - an optimizer that is `variance_reduced` (`keras_svre.SVRE`): on each
      minibatch the game's field is evaluated at the current (or
      extrapolated) point and at the snapshot, on the same data, and the
      step uses `g - g_snapshot + mu`. A snapshot pass over the whole
      finite-sum dataset sets `mu`, before training and then after each
      iteration with probability `restart_probability` (default `1/n`);
    - with `compile(n_dis=k)` (plain Keras or `Optimistic` optimizers, one
      per player): alternating updates, the last player (a GAN's
      discriminator) stepping `k` times, each on its own minibatch, then the
      others once on one more minibatch, at the updated point.

    Both players' gradients at one point come from one forward pass of the
    game (one persistent tape on TensorFlow, one `jax.vjp` on JAX). The
    other points (snapshot, extrapolated) are evaluated statelessly through
    `keras.StatelessScope`, so no copy of any network is made. The iteration
    itself is backend-neutral (`keras.ops`); how the field is differentiated
    and the step Keras calls are the backend's (`keras_svre.game.backend`).

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
            # int64 on TensorFlow, int32 on JAX (no x64): Keras' "int".
            dtype="int",
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
        n_dis: int | None = None,
        **player_optimizers,
    ):
        """Chooses the method (through the optimizers) and the step options.

        Args:
            optimizer: One optimizer for all players. Or give one per player
                as `<player>_optimizer=...` (e.g. `generator_optimizer`).
                All optimizers must step alike (the same `extrapolates` and
                `variance_reduced`: plain Keras, `Extragradient` or `SVRE`).
            update_point: Where the update gradient is evaluated.
                `"extrapolated"` (Algorithm 1 of the paper): every player at
                the joint extrapolated point. `"opponent_extrapolated"` (the
                authors' reference code): each player at its own current
                weights against the others' extrapolated weights (one more
                forward pass per extra player).
            one_minibatch: Extrapolating methods only: use one minibatch for
                both the extrapolation and the update, so an SVRE iteration
                needs F(snapshot) once (3 evaluations instead of 4).
            jit_compile: Passed to `keras.Model.compile`.
            steps_per_execution: Passed to `keras.Model.compile`. Snapshot
                restarts are drawn between executions (one Bernoulli draw per
                iteration, so the rate is unchanged).
            n_dis: `None` (default): the players step simultaneously. A
                positive integer: alternating updates (WGAN's `n_critic`):
                the last player (a GAN's discriminator) takes `n_dis` steps,
                each on a fresh minibatch, then the other players take one
                on one more, at the updated point; `n_dis + 1` minibatches
                and evaluations per iteration. For methods that do not
                extrapolate or reduce variance (SGDA, Adam, OGDA, optimistic
                Adam), with one optimizer per player (see
                `keras_svre.game.alternating`). A non-finite step stops the
                iteration there; the last player's earlier steps in it stay
                applied.
            **player_optimizers: `<player>_optimizer` arguments.
        """
        names = list(self.players())
        given = compiling.given_optimizers(names, optimizer, player_optimizers)
        compiling.check_update_point(update_point)
        dynamic_scaling = loss_scaling.settings(
            [opt for opt, _ in given], self.dtype_policy.name
        )
        given_inner = compiling.unwrapped(given)
        method = compiling.choose_method(names, given_inner, one_minibatch, n_dis)
        self.extrapolates, self.variance_reduced, n_dis = method

        super().compile(
            optimizer=given_inner[0][0],
            jit_compile=jit_compile,
            steps_per_execution=steps_per_execution,
            # Keras would wrap the optimizer in a LossScaleOptimizer under
            # mixed_float16, which the game's own step never calls: the game
            # scales the losses itself.
            auto_scale_loss=False,
        )
        self.update_point = update_point
        self.one_minibatch = bool(one_minibatch)
        self.n_dis = n_dis

        self._player_names = names
        self._game_variables, self._player_slices, self._groups = (
            compiling.place_players(self.players(), names, given_inner)
        )
        self._loss_trackers = {n: keras.metrics.Mean(name=f"{n}_loss") for n in names}
        # `loss`: the sum of the players' losses. It means little by itself,
        # but it is non-finite when any player's loss is or when an iteration
        # was skipped for non-finite gradients, so that Keras' own
        # `TerminateOnNaN` (which reads `logs["loss"]`) works on games.
        self._total_loss_tracker = keras.metrics.Mean(name="loss")
        self._dynamic_scaling = dynamic_scaling
        self._loss_scales = loss_scaling.loss_scales(self, dynamic_scaling, given_inner)
        self._compile_args = {
            "update_point": update_point,
            "one_minibatch": self.one_minibatch,
            "jit_compile": jit_compile,
            "steps_per_execution": steps_per_execution,
            "n_dis": n_dis,
        }
        if optimizer is not None:
            self._compile_optimizers = {"optimizer": optimizer}
        else:
            self._compile_optimizers = {f"{n}_optimizer": opt for (opt, (n,)) in given}
        self.built = True

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

    def _unscale(self, gradients):
        """Gradients divided by the game's dynamic loss scale (if it runs one).

        The dynamic scale is the game's: it unscales here (a fixed
        `loss_scale_factor` is divided out by the optimizers).
        """
        if not self.dynamic_loss_scaling:
            return gradients
        return [g / ops.cast(self.loss_scale, g.dtype) for g in gradients]

    # ------------------------------------------------------------------ #
    # Evaluating the game's vector field.
    # ------------------------------------------------------------------ #
    def _per_group(self, method, *aligned):
        """`method(optimizer, variables, *parts)` per group, gathered back.

        Each argument in `aligned` is a list aligned with `game_variables`;
        each group gets its own part, and the group's results land at its
        variables' places in the returned list.
        """
        result = [None] * len(self._game_variables)
        for group in self._groups:
            parts = [[values[i] for i in group.indices] for values in aligned]
            values = method(group.optimizer, group.variables, *parts)
            for i, value in zip(group.indices, values):
                result[i] = value
        return result

    def snapshot_point(self):
        """The snapshot `w_S` (variance-reduced methods), as tensors."""
        return self._per_group(lambda opt, variables: opt.snapshot_values(variables))

    def variance_reduced_direction(self, gradients, snapshot_gradients):
        """`g - g_S + mu_S` per variable (aligned with `game_variables`)."""
        return self._per_group(
            lambda opt, variables, g, g_s: opt.variance_reduced_gradient(
                g, g_s, variables
            ),
            gradients,
            snapshot_gradients,
        )

    def _record_corrections(self, pairs):
        """Hands each variance-reduced optimizer its part of the paired evaluations."""
        for group in self._groups:
            record = getattr(group.optimizer, "record_correction", None)
            if record is not None:
                parts = [
                    tuple([values[i] for i in group.indices] for values in pair)
                    for pair in pairs
                ]
                record(parts, group.variables)

    def _extrapolate(self, directions):
        return self._per_group(
            lambda opt, variables, d: opt.extrapolate(d, variables), directions
        )

    def _apply_groups(self, directions, groups=None):
        """Each group's optimizer (default: all groups) applies its players'
        part of `directions`."""
        for group in self._groups if groups is None else groups:
            game_optimizers.apply_direction(
                group.optimizer,
                [directions[i] for i in group.indices],
                group.variables,
            )

    def _update_field(self, data, half_point):
        """The update's field: at the joint extrapolated point, or per player."""
        if self.update_point == "extrapolated":
            return self.gradients_at(data, half_point)[0]
        current = self.current_point()
        gradients = [None] * len(current)
        for name, where in self._player_slices.items():
            point = list(half_point)
            point[where] = current[where]
            grads, _ = self.gradients_at(data, point, players=[name])
            gradients[where] = grads[where]
        return gradients

    def gradient_estimate(self, data) -> dict:
        """The method's estimate of the game's field on one minibatch, at the current point.

        `F_i(w)`, and for variance-reduced methods `F_i(w) - F_i(w_S) + mu_S`.
        Nothing is updated. Used to measure the estimate's second moment and
        variance across minibatches (the variance reduction made visible).

        Returns:
            A dict `player name -> list of gradient tensors`.
        """
        gradients, _ = self.field(data, self.current_point())
        if self.variance_reduced:
            snapshot_gradients, _ = self.field(data, self.snapshot_point())
            gradients = self.variance_reduced_direction(gradients, snapshot_gradients)
        return self.by_player(gradients)

    # ------------------------------------------------------------------ #
    # The train step.
    # ------------------------------------------------------------------ #
    def _iteration(self, data) -> dict:
        """One iteration of the method the optimizers declare; returns the logs.

        Backend-neutral (`keras.ops`, variables read and assigned): each
        backend's `train_step` runs it (TensorFlow in Keras' `tf.function`,
        JAX in a `keras.StatelessScope` holding the step's state).

        With minibatches i (`first`) and j (`second`; the same with one
        minibatch or without extrapolation), and `d(F) = F - F(w_S) + mu_S`
        for variance-reduced methods (`d(F) = F` otherwise):

            direction = d(F_i(w))
            if extrapolating:
                direction = d(F_j(extrapolate(direction)))
            apply(direction)

        With `n_dis`, an alternating iteration instead (see
        `keras_svre.game.alternating.step`).
        """
        if self.n_dis is not None:
            return self._record_losses(*alternating.step(self, data))
        k = self.minibatches_per_iteration
        first = game_data.take(data, 0) if k > 1 else data
        second = game_data.take(data, 1) if k > 1 else data

        # Every gradient the iteration computes: if any is non-finite, the
        # whole iteration (extrapolation included) is skipped.
        computed = []
        if self.variance_reduced:
            snapshot = self.snapshot_point()
            # At the snapshot first: both evaluations then see the same
            # random state (see the class doc).
            g_snap, _ = self.gradients_at(first, snapshot)
            computed.append(g_snap)
        g, losses = self.gradients_at(first, self.current_point(), True)
        computed.append(g)
        direction = (
            self.variance_reduced_direction(g, g_snap) if self.variance_reduced else g
        )
        # The paired evaluations (F(w), F(w_S)) on one minibatch, for
        # optimizers that keep statistics of them (`SVRE.record_correction`).
        pairs = [(g, g_snap)] if self.variance_reduced else []
        if self.extrapolates:
            half = self._extrapolate(direction)
            if self.variance_reduced and k > 1:
                g_snap, _ = self.gradients_at(second, snapshot)
                computed.append(g_snap)
            g_half = self._update_field(second, half)
            computed.append(g_half)
            direction = (
                self.variance_reduced_direction(g_half, g_snap)
                if self.variance_reduced
                else g_half
            )
            if self.variance_reduced:
                pairs.append((g_half, g_snap))
        finite_losses = game_data.all_finite(list(losses.values()))
        finite = ops.logical_and(
            finite_losses, game_data.all_finite([t for gs in computed for t in gs])
        )
        self._apply_if_finite(direction, finite, pairs=pairs)
        return self._record_losses(losses, finite, finite_losses)

    def _record_losses(self, losses, finite, finite_losses):
        """Updates the loss trackers with an iteration's losses; returns the logs."""
        for name in self._player_names:
            self._loss_trackers[name].update_state(losses[name])
        total = self._total_loss(losses)
        # An overflow of the scaled gradients under dynamic loss scaling is
        # not an error: the iteration is skipped and the scale halved.
        # Non-finite losses are.
        valid = finite_losses if self.dynamic_loss_scaling else finite
        total = ops.where(valid, total, ops.cast(float("nan"), total.dtype))
        self._total_loss_tracker.update_state(total)
        return {m.name: m.result() for m in self.metrics}

    def _total_loss(self, losses):
        """The players' losses summed, in float32."""
        return functools.reduce(
            ops.add, [ops.cast(losses[n], "float32") for n in self._player_names]
        )

    def _apply_if_finite(self, directions, finite, groups=None, pairs=()):
        """Applies the iteration's update if `finite`; else skips it.

        `groups`: the players' groups to update (default: all). `pairs`: the
        iteration's paired evaluations `(F(w), F(w_S))`, recorded by the
        optimizers (`record_correction`) only if the iteration is applied.

        Skipping leaves the weights, the optimizers' state and their
        iteration counts as they were (non-trainable state the forward pass
        produced, e.g. BatchNorm's moving statistics, is kept, as under
        Keras' `LossScaleOptimizer`). With dynamic loss scaling, a skipped
        iteration halves the scale and `growth_steps` applied ones in a row
        double it.
        """

        def apply():
            self._apply(directions, groups)
            if pairs:
                self._record_corrections(pairs)
            self._after_update()
            if self.dynamic_loss_scaling:
                grown = self.loss_scale_good_steps + 1
                grow = grown >= self._dynamic_scaling["growth_steps"]
                # The variable's value (JAX's `where` takes no Keras variable).
                scale = self.loss_scale.value
                self.loss_scale.assign(ops.where(grow, scale * 2.0, scale))
                self.loss_scale_good_steps.assign(
                    ops.where(grow, ops.zeros_like(grown), grown)
                )

        def skip():
            if self.dynamic_loss_scaling:
                self.loss_scale.assign(self.loss_scale * 0.5)
                self.loss_scale_good_steps.assign(0)

        self._cond(finite, apply, skip)

    def _after_update(self):
        """Hook: runs after each applied iteration (not after a skipped one)."""

    # ------------------------------------------------------------------ #
    # Snapshots.
    # ------------------------------------------------------------------ #
    def draw_uniform(self) -> float:
        """The next restart draw: a uniform number from (seed, draw counter)."""
        self._sync_state()
        counter = int(ops.convert_to_numpy(self.restart_draws))
        self.restart_draws.assign(counter + 1)
        return snapshots.uniform_draw(self.seed, counter)

    def take_snapshot(self, snapshot_data, restart: bool = True):
        """Takes a snapshot and computes its mean gradient over `snapshot_data`.

        With restarts from the average configured, the iterate first restarts
        from the uniform average of the iterates with probability
        `average_restart_probability` (drawn once for all players).

        Args:
            snapshot_data: The finite-sum dataset (finite minibatches, each
                example exactly once: a `tf.data.Dataset` or a sequence such
                as `keras_svre.data.ArrayMinibatches`).
            restart: Whether a restart from the average may be drawn.
        """
        svre = self.svre_optimizers
        if not svre:
            raise ValueError(
                "Only games compiled with a variance-reduced optimizer (SVRE) "
                "take snapshots."
            )
        self._sync_state()
        first = self.snapshots_taken == 0
        average_q = max(o.average_restart_probability for o in svre)
        if average_q > 0:
            do_restart = restart and not first and self.draw_uniform() < average_q
            for group in self._groups:
                if not group.optimizer.keeps_average:
                    continue
                if first:
                    group.optimizer.reset_average(group.variables)
                elif do_restart:
                    group.optimizer.restart_from_average(group.variables)
        self._before_snapshot_pass()
        mean = self.snapshot_mean_gradient(snapshot_data)
        # Under dynamic loss scaling an overflow in the snapshot pass would
        # make every later direction non-finite: halve the scale and redo the
        # pass, as a skipped iteration would (down to a scale of 1).
        while (
            self.dynamic_loss_scaling
            and not bool(game_data.all_finite(mean))
            and float(ops.convert_to_numpy(self.loss_scale)) > 1.0
        ):
            self.loss_scale.assign(self.loss_scale * 0.5)
            self.loss_scale_good_steps.assign(0)
            mean = self.snapshot_mean_gradient(snapshot_data)
        for group in self._groups:
            group.optimizer.take_snapshot(
                group.variables, [mean[i] for i in group.indices]
            )

    def _before_snapshot_pass(self):
        """Hook: runs before each snapshot's full pass (the GAN draws new latents)."""

    def snapshot_mean_gradient(self, snapshot_data):
        """Full-data mean of the game's field at the current point.

        Iterates the whole finite-sum dataset, weighting each batch by its
        number of examples: on TensorFlow in one `tf.function` (and under a
        distribution strategy, across all replicas and workers), on JAX with
        a jitted per-minibatch sum looped on the host.
        """
        cache = self.__dict__.get("_snapshot_pass_cache")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_snapshot_pass_cache", cache)
        if id(snapshot_data) not in cache:
            cache[id(snapshot_data)] = self._make_snapshot_pass(snapshot_data)
        return cache[id(snapshot_data)]()

    def _restart_probability(self, dataset):
        configured = {o.restart_probability for o in self.svre_optimizers}
        if configured != {None}:
            return max(p for p in configured if p is not None)
        n = game_data.count(dataset)
        if n <= 0:
            raise ValueError(
                "SVRE's default restart probability is 1/n, n = minibatches per "
                "pass, but the training dataset's length is unknown or infinite. "
                "Pass `SVRE(restart_probability=...)` explicitly, or give a "
                "dataset of known length."
            )
        return 1.0 / n

    # ------------------------------------------------------------------ #
    # Fit and evaluate.
    # ------------------------------------------------------------------ #
    def fit(self, x=None, y=None, *, snapshot_data=None, callbacks=None, **kwargs):
        """Trains the game with Keras' `fit`.

        Args:
            x: Minibatches (the finite sum: each element is one minibatch
                i): a `tf.data.Dataset`, or a sequence such as
                `keras_svre.data.ArrayMinibatches` (NumPy; on JAX this needs
                no TensorFlow). Extrapolating methods consume two
                consecutive minibatches per iteration (i for the
                extrapolation, j for the update), so an epoch has half as many
                iterations as batches; alternating updates consume `n_dis + 1`.
            y: Unused (must be `None`; the game's data is all in `x`).
            snapshot_data: Variance-reduced methods only: the finite dataset
                the snapshot pass iterates (each example once; a larger batch
                size is fine). Defaults to `x`, which must then be finite.
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
        self._check_compiled("fitting")
        game_data.check_minibatches(x, "training data")
        if y is not None:
            raise ValueError("`y` is not used by a Game: put all the data in `x`.")
        k = self.minibatches_per_iteration
        # Everything that can be checked is, before any training (or
        # snapshot pass) starts.
        self.check_data(x, "training dataset")
        game_data.check_minibatches_stack(x, k)
        self._check_player_losses(x)
        validation = kwargs.get("validation_data")
        if validation is not None:
            game_data.check_minibatches(validation, "`validation_data`")
            self.check_data(validation, "validation dataset")
        callbacks = game_callbacks.for_game(self, callbacks)
        if self.variance_reduced:
            snapshot_data = x if snapshot_data is None else snapshot_data
            game_data.check_finite_dataset(snapshot_data)
            self.check_data(snapshot_data, "snapshot dataset")
            schedule = snapshots.SnapshotSchedule(
                snapshot_data, self._restart_probability(x)
            )
            callbacks.insert(0, schedule)
        elif snapshot_data is not None:
            raise ValueError("`snapshot_data` is only used by SVRE.")
        x = self._fit_data(game_data.stack_minibatches(x, k))
        # The minibatches come in the data's own order (it reshuffles itself,
        # e.g. `ArrayMinibatches(shuffle=True)`); Keras' `fit` would shuffle a
        # sequence's order once more.
        kwargs.setdefault("shuffle", False)
        with self._explained_data_errors(k):
            return super().fit(x, callbacks=callbacks, **kwargs)

    def evaluate(self, x=None, y=None, **kwargs):
        """Each player's loss on held-out minibatches (see `test_step`)."""
        self._check_compiled("evaluating")
        game_data.check_minibatches(x, "evaluation data")
        if y is not None:
            raise ValueError("`y` is not used by a Game: put all the data in `x`.")
        self.check_data(x, "evaluation dataset")
        with self._explained_data_errors(1):
            return super().evaluate(x, **kwargs)

    def _evaluation(self, data) -> dict:
        """The logs of one held-out minibatch (each backend's `test_step` runs it)."""
        losses = self.compute_evaluation_losses(data)
        for name in self._player_names:
            self._loss_trackers[name].update_state(losses[name])
        self._total_loss_tracker.update_state(self._total_loss(losses))
        return {m.name: m.result() for m in self.metrics}

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
            dataset: Minibatches: a `tf.data.Dataset`, or a sequence such as
                `keras_svre.data.ArrayMinibatches`.
            what: How to name it in the message (e.g. "training dataset").
        """
        if game_data.count(dataset) == 0:
            raise ValueError(
                f"The {what} is empty (0 minibatches). If it was batched with "
                "`drop_remainder=True`, the batch size may be larger than the "
                "number of examples."
            )

    def _check_player_losses(self, dataset) -> None:
        """Refuses, in one sentence, losses that are not one scalar per player.

        `compute_player_losses` is traced once on the first minibatch (a
        `tf.function` trace / `jax.eval_shape`: nothing runs, no state
        moves), before the first `fit` compiles the step: inside the
        compiled step a missing key or a per-example loss would surface as a
        backend's staging error, or not at all.
        """
        if getattr(self, "_player_losses_checked", False):
            return
        first = game_data.first(dataset)
        if first is None:
            return
        if isinstance(first, list):
            first = tuple(first)

        def losses_of_first():
            # A scope without a state mapping: reads the variables, discards
            # writes.
            with keras.StatelessScope():
                return self.compute_player_losses(first, training=True)

        # Traced, not run: nothing is computed, no state moves.
        losses = game_backend.trace(losses_of_first)
        names = list(self._player_names)
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
        self._player_losses_checked = True

    def _data_error_messages(self) -> dict:
        """`{marker in a TensorFlow error: the sentence that explains it}`."""
        return {}
