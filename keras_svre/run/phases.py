"""A run's phases: stretches of epochs each trained with one method."""

from __future__ import annotations

import dataclasses

import numpy as np

from keras_svre.optimizers import methods as method_table


def steps_like(method) -> tuple:
    """How a method steps. A warm start must step differently from the method it
    hands over to, so that a checkpoint's optimizer says which phase a run was in.
    """
    return (method.extrapolates, method.variance_reduced)


@dataclasses.dataclass(frozen=True)
class Phase:
    """A stretch of a run trained with one method: epochs [first, last)."""

    method: method_table.Method
    generator_lr: float
    discriminator_lr: float
    first_epoch: int
    last_epoch: int
    batches_per_epoch: int
    steps_per_epoch: int | None = None
    n_dis: int | None = None

    @property
    def per_pass(self) -> int:
        """Iterations in a pass over the data (extrapolating methods use two
        batches each, alternating updates `n_dis + 1`)."""
        return self.batches_per_epoch // self.method.minibatches_per_iteration(
            n_dis=self.n_dis
        )

    @property
    def per_epoch(self) -> int:
        """Iterations per epoch: a pass, or `steps_per_epoch` if fewer."""
        if self.steps_per_epoch is None:
            return self.per_pass
        return min(self.per_pass, self.steps_per_epoch)

    @property
    def iterations(self) -> int:
        """Iterations of the phase at its full length."""
        return (self.last_epoch - self.first_epoch) * self.per_epoch

    def holds(self, game) -> bool:
        """Whether `game`'s optimizers step as this phase's method does."""
        return steps_like(self.method) == (game.extrapolates, game.variance_reduced)

    def report(self, game, pass_cost: float) -> dict:
        """The phase's method, iterations, minibatch evaluations and snapshots.

        `game` is `None` for a phase finished before a resume (full length).
        `pass_cost` is a snapshot pass's cost in minibatch evaluations.
        """
        if game is None:
            iterations, snapshots = self.iterations, 0
            per_iteration = self.method.evaluations_per_iteration(n_dis=self.n_dis)
        else:
            iterations, snapshots = game.iterations, game.snapshots_taken
            per_iteration = game.evaluations_per_iteration
        return {
            "method": self.method.name,
            "iterations": iterations,
            "minibatch_evaluations": round(
                iterations * per_iteration + snapshots * pass_cost
            ),
            "snapshots": snapshots,
        }


def epoch_seed(seed: int, epoch: int) -> int:
    """The data order's seed in epoch `epoch` of a run seeded with `seed`."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def current_phase(game, phases) -> int:
    """Which phase a (loaded) game is in: the first whose method steps as it does."""
    for index, phase in enumerate(phases):
        if phase.holds(game):
            return index
    raise ValueError(
        f"The game's optimizer ({type(game.game_optimizers[0]).__name__}) "
        "matches no phase of the run's settings."
    )
