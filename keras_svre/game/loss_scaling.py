"""The game's dynamic loss scaling (mixed_float16), for every method.

`settings` reads what the optimizers and the dtype policy ask for,
`loss_scales` builds the game's scale (a weight saved with it) and says how
each player's loss is scaled. The scale moves in the train step
(`Game._apply_if_finite`) and the snapshot pass (`Game.take_snapshot`).
"""

from __future__ import annotations

import keras

LossScaleOptimizer = keras.optimizers.LossScaleOptimizer


def unwrap(optimizer):
    """The optimizer inside a `LossScaleOptimizer` (the method is its)."""
    if isinstance(optimizer, LossScaleOptimizer):
        return optimizer.inner_optimizer
    return optimizer


def settings(optimizers, dtype_policy_name: str):
    """The dynamic loss scaling the game runs, or `None`.

    On when the optimizers are wrapped in `keras.optimizers.
    LossScaleOptimizer` (its `initial_scale` and `dynamic_growth_steps`), or
    when the game's dtype policy is `mixed_float16` and no optimizer has an
    explicit `loss_scale_factor` (Keras' defaults). An explicit
    `loss_scale_factor` is a fixed scale and is kept.

    Returns:
        `{"initial_scale": float, "growth_steps": int}` or `None`.
    """
    wrapped = [o for o in optimizers if isinstance(o, LossScaleOptimizer)]
    if wrapped:
        if len(wrapped) != len(optimizers):
            raise ValueError(
                "Either every player's optimizer is wrapped in a "
                "`LossScaleOptimizer` or none is: the game scales all "
                "players' losses with one dynamic scale. Received "
                f"{len(wrapped)} wrapped of {len(optimizers)}."
            )
        found = {(o.initial_scale, o.dynamic_growth_steps) for o in wrapped}
        if len(found) > 1:
            raise ValueError(
                "The players' `LossScaleOptimizer`s must have the same "
                "`initial_scale` and `dynamic_growth_steps` (the game keeps "
                f"one dynamic scale). Received: {sorted(found)}."
            )
        initial_scale, growth_steps = found.pop()
    elif dtype_policy_name == "mixed_float16" and all(
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
    return {"initial_scale": float(initial_scale), "growth_steps": int(growth_steps)}


def loss_scales(game, dynamic_scaling, given_inner) -> dict:
    """`{player: function that scales its loss}`, with the game's scale built.

    Args:
        game: The `Game` being compiled.
        dynamic_scaling: What `settings` returned.
        given_inner: `[(optimizer, [player names])]`, unwrapped.

    Returns:
        The game's own scaling (`game._scale_loss`) for every player under
        dynamic scaling, else each optimizer's `scale_loss` (a fixed
        `loss_scale_factor`, or none) for its players.
    """
    if dynamic_scaling is None:
        return {n: opt.scale_loss for opt, members in given_inner for n in members}
    _add_state(game, dynamic_scaling["initial_scale"])
    return {n: game._scale_loss for _, members in given_inner for n in members}


def _add_state(game, initial_scale) -> None:
    """The dynamic loss scale and its count of good steps, saved with the game."""
    if getattr(game, "loss_scale", None) is not None:
        return
    game.loss_scale = game.add_weight(
        shape=(),
        dtype="float32",
        initializer=keras.initializers.Constant(initial_scale),
        trainable=False,
        name="loss_scale",
        aggregation="only_first_replica",
    )
    game.loss_scale_good_steps = game.add_weight(
        shape=(),
        # int64 on TensorFlow, int32 on JAX (no x64): Keras' "int".
        dtype="int",
        initializer="zeros",
        trainable=False,
        name="loss_scale_good_steps",
        aggregation="only_first_replica",
    )
