"""SVRE's snapshots: the restart draws and their schedule.

The full pass itself is the backend's (`Game._make_snapshot_pass`).
"""

from __future__ import annotations

import math

import keras
import numpy as np


def uniform_draw(seed: int, counter: int) -> float:
    """The restart draw number `counter` of a game seeded with `seed`, in [0, 1)."""
    return float(np.random.default_rng([seed, counter]).random())


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
