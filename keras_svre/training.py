"""Training recipes of the paper: warm start (SVRE-GAN-WS) and step-size decay."""

from __future__ import annotations

import keras


def fit_with_warm_start(
    game,
    x,
    *,
    warm_optimizer,
    warm_epochs: int,
    optimizer=None,
    epochs: int,
    compile_kwargs: dict | None = None,
    snapshot_data=None,
    callbacks=None,
    **fit_kwargs,
):
    """Trains with a cheap stochastic method first, then switches to SVRE.

    The paper's SVRE-GAN-WS: deep GANs train faster early with a stochastic
    method (e.g. SE-A or Adam), and SVRE's gains come late. The game is
    compiled with `warm_optimizer` for `warm_epochs` epochs, then recompiled
    with `optimizer` (an `SVRE`, or a dict of `<player>_optimizer`s) and
    trained to `epochs`. The first SVRE snapshot is taken at the switch (the
    first fit of a freshly built SVRE optimizer takes one before training).
    The weights, the noise bank and the averaged generators carry over.

    Args:
        game: A `keras_svre.Game` (e.g. a `GAN`).
        x: The training dataset.
        warm_optimizer: The warm-start optimizer(s): one optimizer, or a dict
            of `<player>_optimizer`s.
        warm_epochs: Epochs of warm start (0 skips it).
        optimizer: The optimizer(s) after the switch, as for `warm_optimizer`.
        epochs: Total number of epochs, warm start included.
        compile_kwargs: Further `Game.compile` arguments for both phases.
        snapshot_data: The finite dataset of SVRE's snapshot pass.
        callbacks: Keras callbacks, used in both phases.
        **fit_kwargs: Passed to `fit` (e.g. `verbose`, `steps_per_epoch`).

    Returns:
        A `keras.callbacks.History` covering both phases.
    """
    if not 0 <= warm_epochs <= epochs:
        raise ValueError(
            "`warm_epochs` must be between 0 and `epochs`. "
            f"Received: warm_epochs={warm_epochs}, epochs={epochs}."
        )
    compile_kwargs = dict(compile_kwargs or {})
    history = keras.callbacks.History()
    history.history, history.epoch = {}, []

    def compile_with(opt):
        if isinstance(opt, dict):
            game.compile(**opt, **compile_kwargs)
        else:
            game.compile(optimizer=opt, **compile_kwargs)

    def run(first_epoch, last_epoch, **extra):
        if last_epoch <= first_epoch:
            return
        h = game.fit(
            x,
            epochs=last_epoch,
            initial_epoch=first_epoch,
            callbacks=callbacks,
            **extra,
            **fit_kwargs,
        )
        for key, values in h.history.items():
            history.history.setdefault(key, []).extend(values)
        history.epoch.extend(h.epoch)

    compile_with(warm_optimizer)
    run(0, warm_epochs)
    compile_with(optimizer)
    extra = {"snapshot_data": snapshot_data} if game.variance_reduced else {}
    run(warm_epochs, epochs, **extra)
    return history


def epoch_decay(
    initial_learning_rate: float, iterations_per_epoch: int, rate: float
) -> keras.optimizers.schedules.LearningRateSchedule:
    """The reference code's step-size decay: times `rate` after every epoch.

    A staircase `ExponentialDecay`; game optimizers evaluate it at their
    iteration count for the extrapolation and the update alike.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"`rate` must be in (0, 1]. Received: rate={rate}.")
    return keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate,
        decay_steps=max(int(iterations_per_epoch), 1),
        decay_rate=rate,
        staircase=True,
    )
