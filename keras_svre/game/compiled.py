"""What a compiled game tells: its optimizers, players, counts, learning rates.

`CompiledGame` is a base of `keras_svre.game.Game`: read-only views of what
`Game.compile` set up (and the learning rates, which Keras' callbacks read
and write as if the game had one optimizer).
"""

from __future__ import annotations

from keras import ops

from keras_svre import optimizers as game_optimizers
from keras_svre.optimizers.methods import (
    evaluations_per_iteration,
    minibatches_per_iteration,
)


class CompiledGame:
    """The views of a compiled `Game` (a base class of `Game`, not used alone)."""

    def _check_compiled(self, doing):
        if self._groups is None:
            raise RuntimeError(
                f"Compile the game before {doing} it, e.g. "
                "`game.compile(optimizer=keras_svre.SVRE(0.01))`."
            )

    @property
    def game_optimizers(self) -> list:
        """The compiled optimizers, one per group of players."""
        return [group.optimizer for group in self._groups or []]

    @property
    def svre_optimizers(self) -> list:
        """The variance-reduced optimizers (those that take snapshots)."""
        return [o for o in self.game_optimizers if game_optimizers.variance_reduced(o)]

    @property
    def player_names(self) -> list:
        """The players, in the order of `players()`."""
        return list(self._player_names)

    @property
    def game_variables(self) -> list:
        """Every player's trainable variables, player after player."""
        return list(self._game_variables)

    def by_player(self, values) -> dict:
        """`{player: its part}` of a list aligned with `game_variables`."""
        return {n: list(values[s]) for n, s in self._player_slices.items()}

    @property
    def iterations(self) -> int:
        """Iterations applied so far with the current optimizers."""
        self._sync_state()
        return int(ops.convert_to_numpy(self.game_optimizers[0].iterations))

    @property
    def snapshots_taken(self) -> int:
        """Snapshots taken so far with the current optimizers (0 if none)."""
        self._sync_state()
        svre = self.svre_optimizers
        return int(ops.convert_to_numpy(svre[0].snapshots_taken)) if svre else 0

    @property
    def minibatches_per_iteration(self) -> int:
        """How many dataset batches one train step consumes."""
        return minibatches_per_iteration(
            self.extrapolates, self.one_minibatch, self.n_dis
        )

    @property
    def evaluations_per_iteration(self) -> int:
        """Minibatch evaluations of the field per iteration (the paper's unit)."""
        return evaluations_per_iteration(
            self.extrapolates, self.variance_reduced, self.one_minibatch, self.n_dis
        )

    @property
    def dynamic_loss_scaling(self) -> bool:
        """Whether the game runs dynamic loss scaling (mixed_float16)."""
        return getattr(self, "_dynamic_scaling", None) is not None

    # Learning rates (Keras' callbacks assume one optimizer).
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
        return self.game_optimizers[0].learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        first = float(ops.convert_to_numpy(self.game_optimizers[0].learning_rate))
        factor = float(value) / first
        for opt in self.game_optimizers:
            current = float(ops.convert_to_numpy(opt.learning_rate))
            opt.learning_rate = current * factor

    @property
    def player_learning_rates(self) -> dict:
        """`{player: learning rate}` (players sharing an optimizer share one)."""
        return {
            name: float(ops.convert_to_numpy(group.optimizer.learning_rate))
            for group in self._groups
            for name in group.players
        }
