"""A training run: its settings (`RunConfig`), its phases, and the epoch loop.

`keras-svre train` and `keras_svre.presets` both build a `RunConfig` and run
it with `train`:

    config = keras_svre.run.RunConfig(method="svre", width=16, epochs=30)
    gan, finite_sum, reports, history = keras_svre.run.train(config)

A run is a sequence of phases (the warm start of SVRE-GAN-WS, then the
method), each a stretch of epochs trained with one method. Epoch `e` reads
the data in an order drawn from `(seed, e)` alone, one `fit` call per epoch,
so a run resumed from a checkpoint reads exactly what the uninterrupted run
would have: the game's iteration count says which epoch it was in and how
many of that epoch's batches were already used (they are skipped).

The modules: `settings` (how a setting is declared, checked and named),
`config` (`RunConfig`), `phases` (`Phase`), `loop` (`train_phases`, `train`),
`failures` (`TrainingError`, `after_training`), `records`
(`why_default_generator`).
"""

from keras_svre.run.config import LENGTH_SETTINGS, UPDATE_POINTS, RunConfig
from keras_svre.run.failures import TrainingError, after_training
from keras_svre.run.loop import COUNTS, EpochData, train, train_phases
from keras_svre.run.phases import Phase, current_phase, epoch_seed
from keras_svre.run.records import why_default_generator
from keras_svre.run.settings import ConfigError, read_settings

__all__ = [
    "COUNTS",
    "ConfigError",
    "EpochData",
    "LENGTH_SETTINGS",
    "Phase",
    "RunConfig",
    "TrainingError",
    "UPDATE_POINTS",
    "after_training",
    "current_phase",
    "epoch_seed",
    "read_settings",
    "train",
    "train_phases",
    "why_default_generator",
]
