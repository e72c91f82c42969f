"""A run that fails after training started: what was saved, and where it failed.

`train_phases` and `after_training` raise `TrainingError`, which names the
phase (or the work after training) and the iteration, after saving the
game's latest state where its weights are finite.
"""

from __future__ import annotations

import contextlib
import pathlib

import numpy as np


class TrainingError(RuntimeError):
    """A run that failed after training started; says where, and what was saved."""


def phase_name(phases, index) -> str:
    """How an error names phase `index` of `phases`."""
    phase = phases[index]
    name = f"the {phase.method.name} phase"
    if len(phases) > 1:
        name += f" ({'warm start, ' if index == 0 else ''}{index + 1} of {len(phases)})"
    return name


@contextlib.contextmanager
def saved_on_failure(game, where, checkpoint, before=0):
    """Saves `game` to `checkpoint` if the block raises; raises `TrainingError`.

    The error names `where` (a phase, or the work after training) and the
    iteration, and says what was saved: a state whose weights are finite.
    `before` is the run's iterations before the game's own count.
    """
    try:
        yield
    except Exception as e:
        iteration = before + _game_iterations(game)
        saved = _save_latest(game, checkpoint)
        if saved:
            state = (
                f"the latest state (iteration {iteration}) is saved in {checkpoint}: "
                "continue with `keras-svre train --resume --out "
                f"{pathlib.Path(checkpoint).parent}`"
            )
        elif checkpoint is not None:
            state = f"the last good checkpoint, if any, is {checkpoint}"
        else:
            state = "nothing was saved"
        raise TrainingError(
            f"{where} failed at iteration {iteration} with "
            f"{type(e).__name__}: {e} ({state})."
        ) from e


def _game_iterations(game) -> int:
    try:
        return int(game.iterations)
    except Exception:  # noqa: BLE001 - the count is only for the message
        return 0


def _save_latest(game, checkpoint) -> bool:
    """Saves `game` to `checkpoint` if its weights are finite; whether it did."""
    if checkpoint is None:
        return False
    from keras_svre import callbacks

    try:
        # On JAX the running `fit`'s state is held outside the variables.
        sync = getattr(game, "_sync_state", None)
        if sync is not None:
            sync()
        if not all(np.all(np.isfinite(v.numpy())) for v in game.weights):
            return False
        callbacks.save_atomically(game, checkpoint)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        return False
    return True


def after_training(what, function, game, checkpoint):
    """`function(game)` for the work after training (an evaluation, a save).

    If it fails, the trained game is saved to `checkpoint` first, and
    `TrainingError` names `what`.
    """
    where = f"{what} (training had finished)"
    with saved_on_failure(game, where, checkpoint):
        return function(game)
