"""The resume-exact epoch loop of a run (`train_phases`), and `train`.

Epoch `e` reads the data in an order drawn from `(seed, e)` alone, one `fit`
call per epoch, so a run resumed from a checkpoint reads exactly what the
uninterrupted run would have: the game's iteration count says which epoch it
was in and how many of that epoch's batches were already used (they are
skipped).
"""

from __future__ import annotations

import keras

from keras_svre.run.config import RunConfig
from keras_svre.run.failures import phase_name, saved_on_failure
from keras_svre.run.phases import current_phase

# The counts `train_phases` adds to the logs.
COUNTS = ("iterations", "minibatch_evaluations", "snapshots")


class EpochData:
    """The finite-sum data of a run, one epoch's order at a time (cached)."""

    def __init__(self, config: RunConfig, data_dir=None):
        self.config = config
        self.data_dir = data_dir
        self._epoch, self._data = None, None

    def __call__(self, epoch: int):
        if epoch != self._epoch:
            self._epoch = epoch
            self._data = self.config.load_data(epoch, self.data_dir)
        return self._data


def train_phases(
    game,
    config: RunConfig,
    phases,
    epoch_data,
    *,
    callbacks=None,
    verbose="auto",
    jit_compile="auto",
    strategy=None,
    on_switch=None,
    checkpoint=None,
):
    """Trains `game` through the run's phases from where it stands (resume-exact).

    The game is in the phase whose method it is compiled with; a finished
    phase hands over to the next by recompiling the game (weights, noise bank
    and averages carry over; with `average_warm_start=False` the averages
    restart).

    Args:
        game: A compiled `GAN` (new, or loaded from a checkpoint).
        config: The run's settings.
        phases: `config.phases(...)`.
        epoch_data: `epoch -> finite-sum data` in that epoch's order.
        callbacks: Keras callbacks, for every `fit` call. Their logs also
            hold the run's counts so far, over all phases (`COUNTS`:
            `iterations`, `minibatch_evaluations`, `snapshots`).
        verbose: `fit`'s verbosity.
        jit_compile: For the phases' `compile`.
        strategy: The distribution strategy the game lives in (compiles
            happen in its scope).
        on_switch: Called with the new phase when a phase hands over.
        checkpoint: A `.keras` path: if training fails with an error, the
            game's latest state is saved there before `TrainingError` (which
            names the phase) is raised.

    Returns:
        `(reports, history)`: one report per phase (see `Phase.report`) and
        a `keras.callbacks.History` over all `fit` calls. A run stopped by a
        non-finite iteration ends early; `reports` cover what ran.

    Raises:
        TrainingError: for any error raised while a phase trains (the
            original error is its cause).
    """
    import contextlib

    import keras

    history = keras.callbacks.History()
    history.history, history.epoch = {}, []
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    total = config.total_iterations(phases)
    start = current_phase(game, phases)
    before = sum(phase.iterations for phase in phases[:start])
    finite_sum = epoch_data(0)
    pass_cost = finite_sum.num_examples / finite_sum.batch_size
    # Phases finished before a resume, at their full length.
    reports = [phase.report(None, pass_cost) for phase in phases[:start]]
    for index in range(start, len(phases)):
        phase = phases[index]
        if index > start:
            with scope:
                game.compile(**config.compile_arguments(phase, jit_compile))
                if not config.average_warm_start:
                    game.reset_averages()
            if on_switch is not None:
                on_switch(phase)
        # With the length given in steps, the last phase runs to them.
        open_ended = index == len(phases) - 1 and config.steps is not None
        counts = _RunCounts(phase, reports, pass_cost)
        where = phase_name(phases, index)
        with saved_on_failure(game, where, checkpoint, before):
            stopped = _train_phase(
                game,
                phase,
                open_ended,
                before,
                total,
                epoch_data,
                [counts, *(callbacks or [])],
                verbose,
                history,
            )
        reports.append(phase.report(game, pass_cost))
        before += game.iterations
        if stopped or before >= total:
            break
    return reports, history


class _RunCounts(keras.callbacks.Callback):
    """Adds the run's counts so far (`COUNTS`, over all phases) to the logs.

    The phases before `phase` count as their `reports` say.
    """

    def __init__(self, phase, earlier_reports, pass_cost):
        super().__init__()
        self.phase = phase
        self.pass_cost = pass_cost
        self.earlier = {key: sum(r[key] for r in earlier_reports) for key in COUNTS}

    def _add(self, logs):
        if logs is None:
            return
        report = self.phase.report(self.model, self.pass_cost)
        for key in COUNTS:
            logs[key] = float(self.earlier[key] + report[key])

    def on_train_batch_end(self, batch, logs=None):
        self._add(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._add(logs)


def _train_phase(
    game, phase, open_ended, before, total, epoch_data, callbacks, verbose, history
) -> bool:
    """Trains one phase, an epoch per `fit` call; True if training must stop.

    `before` is the run's iterations before this phase. A phase resumed
    mid-epoch skips the batches that epoch already used; the last phase may
    run past its epochs when the run's length is given in steps (`open_ended`).
    """
    from keras_svre.callbacks import NonFiniteLossError

    iteration = game.iterations
    while before + iteration < total:
        epoch = phase.first_epoch + iteration // phase.per_epoch
        if epoch >= phase.last_epoch and not open_ended:
            return False
        done = iteration % phase.per_epoch
        steps = min(phase.per_epoch - done, total - before - iteration)
        finite_sum = epoch_data(epoch)
        # The batches this epoch already used (before an interruption).
        train_data = finite_sum.train.skip(done * game.minibatches_per_iteration)
        fit_kwargs = {}
        if game.variance_reduced:
            fit_kwargs["snapshot_data"] = finite_sum.snapshot
        # An epoch run to its end reads its stream to the end (the stream's
        # cache is then complete, and no truncation warning is printed).
        to_end = done + steps == phase.per_pass
        try:
            h = game.fit(
                train_data,
                initial_epoch=epoch,
                epochs=epoch + 1,
                steps_per_epoch=None if to_end else steps,
                callbacks=callbacks,
                verbose=verbose,
                shuffle=False,
                **fit_kwargs,
            )
        except NonFiniteLossError:
            return True
        for key, values in h.history.items():
            history.history.setdefault(key, []).extend(values)
        history.epoch.extend(h.epoch)
        previous, iteration = iteration, game.iterations
        if game.stop_training or iteration == previous:
            return True
    return False


def train(
    config: RunConfig,
    *,
    data_dir=None,
    callbacks=None,
    verbose="auto",
    jit_compile="auto",
):
    """Trains a run from scratch on one device; see `keras-svre train` for more.

    Args:
        config: The run's settings.
        data_dir: TFDS data folder.
        callbacks: Keras callbacks.
        verbose: `fit`'s verbosity.
        jit_compile: Passed to `compile`.

    Returns:
        `(gan, finite_sum, reports, history)`.
    """
    import keras

    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.dtype_policy)
    epoch_data = EpochData(config, data_dir)
    finite_sum = epoch_data(0)
    phases = config.phases(finite_sum.batches_per_epoch)
    gan = config.build_gan(finite_sum.num_examples, phases[0], jit_compile)
    reports, history = train_phases(
        gan,
        config,
        phases,
        epoch_data,
        callbacks=callbacks,
        verbose=verbose,
        jit_compile=jit_compile,
    )
    return gan, finite_sum, reports, history
