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


def estimated_correlation(statistics) -> float | None:
    """The game's correlation between `F_i(w)` and `F_i(w_S)`, pooled over tensors.

    `sqrt(sum_k max(C_k, 0)^2 / V_k / sum_k U_k)`: the square root of the share
    of the plain estimate's variance (U, summed over every tensor) that the
    per-tensor optimal coefficient removes (`C_k^2 / V_k`, over the tensors
    with `V_k > 0`; a negative covariance removes nothing). See `SVRE`.

    Args:
        statistics: One dict per optimizer, as `SVRE.correction_statistics()`
            returns them (with `"field_variance"`).

    Returns:
        The estimate, or `None` before any statistics (no `V_k > 0`, or
        `U` summing to 0).
    """
    explained, total, known_any = 0.0, 0.0, False
    for stats in statistics:
        variance = np.asarray(stats["variance"], np.float64)
        covariance = np.maximum(np.asarray(stats["covariance"], np.float64), 0.0)
        known = variance > 0
        known_any = known_any or bool(known.any())
        explained += float(np.sum(covariance[known] ** 2 / variance[known]))
        total += float(np.sum(stats["field_variance"]))
    if not known_any or not total > 0:
        return None
    return math.sqrt(explained / total)


def correlation_restart(optimizers, threshold: float) -> bool:
    """Whether the estimated correlation has fallen below `threshold`.

    Pooled over the optimizers configured with `restart_correlation` (those
    that keep U); `False` while there is no estimate.
    """
    statistics = [
        o.correction_statistics()
        for o in optimizers
        if getattr(o, "restart_correlation", None) is not None
    ]
    rho = estimated_correlation(statistics)
    return rho is not None and rho < threshold


class SnapshotSchedule(keras.callbacks.Callback):
    """Takes SVRE's snapshots: one before training, then Bernoulli(p) restarts.

    `Game.fit` adds it for variance-reduced methods. After each iteration a
    new snapshot (with its full pass) is taken with probability `p`; the
    draws come from the game's seed and a counter saved with the model, so
    they are the same on every replica and worker and a resumed run repeats
    them. When the game's SVRE optimizers set `restart_correlation`, a
    snapshot is taken instead when the estimated correlation falls below it
    (the largest one set; `correlation_restart`), with no draw: it depends on
    the optimizers' saved statistics only, so a resumed run repeats it too.

    Args:
        snapshot_data: The finite-sum dataset of the snapshot pass.
        restart_probability: The per-iteration snapshot probability.
    """

    def __init__(self, snapshot_data, restart_probability: float):
        super().__init__()
        self.snapshot_data = snapshot_data
        self.restart_probability = float(restart_probability)
        self.restart_correlation = None
        self._last_iteration = None

    def on_train_begin(self, logs=None):
        if self.model.snapshots_taken == 0:
            self.model.take_snapshot(self.snapshot_data)
        self._last_iteration = self.model.iterations
        thresholds = [
            o.restart_correlation
            for o in self.model.svre_optimizers
            if getattr(o, "restart_correlation", None) is not None
        ]
        self.restart_correlation = max(thresholds) if thresholds else None

    def on_train_batch_end(self, batch, logs=None):
        now = self.model.iterations
        steps = max(now - self._last_iteration, 0)
        self._last_iteration = now
        if steps == 0:
            return
        if self.restart_correlation is not None:
            # `iterations` above gave the variables the step's state (JAX).
            # With steps_per_execution > 1: the statistics after the last.
            if correlation_restart(
                self.model.svre_optimizers, self.restart_correlation
            ):
                self.model.take_snapshot(self.snapshot_data)
            return
        # With steps_per_execution > 1 several iterations ran: any of their
        # draws succeeding triggers one snapshot now.
        threshold = 1.0 - math.pow(1.0 - self.restart_probability, steps)
        if self.model.draw_uniform() < threshold:
            self.model.take_snapshot(self.snapshot_data)
