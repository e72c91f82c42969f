"""Alternating updates: `n_dis` steps of the last player, then one of the others.

The classic GAN schedule (Goodfellow et al., 2014; WGAN's `n_critic`): the
discriminator takes `n_dis` gradient steps, each on a fresh minibatch, then
the generator takes one step on a fresh minibatch at the updated
discriminator. In a `Game` the last of `players()` plays the
discriminator's part (a GAN's discriminator, the bilinear game's `y`) and
the other players take the generator's (together, simultaneously).
"""

from __future__ import annotations

import functools

from keras import ops

from keras_svre.game import data as game_data


def check(n_dis, players, groups, extrapolates: bool, variance_reduced: bool):
    """`n_dis` as `Game.compile` keeps it, after checking it fits the method.

    Args:
        n_dis: `None` (simultaneous steps) or a positive integer.
        players: The game's player names, in order.
        groups: `[(optimizer, player names)]`, one per optimizer.
        extrapolates: Whether the method extrapolates.
        variance_reduced: Whether the method reduces variance.

    Raises:
        ValueError: for a bad `n_dis`, a method that steps all players
            jointly, or an optimizer shared by the last player and another.
    """
    if n_dis is None:
        return None
    if isinstance(n_dis, bool) or not isinstance(n_dis, int) or n_dis < 1:
        raise ValueError(
            "Argument `n_dis` must be None (simultaneous steps) or a positive "
            f"integer. Received: n_dis={n_dis!r}."
        )
    if extrapolates or variance_reduced:
        raise ValueError(
            "Alternating updates (`n_dis`) take one gradient step per player at "
            "a time: they work with SGDA, Adam and the optimistic methods, not "
            "with extragradient or SVRE, which step all players from one joint "
            f"point. Received: n_dis={n_dis} with an optimizer that "
            + ("extrapolates." if extrapolates else "reduces variance.")
        )
    if len(players) < 2:
        raise ValueError(
            "Alternating updates (`n_dis`) need at least two players. "
            f"Received: players {list(players)}."
        )
    last = players[-1]
    for _, members in groups:
        if last in members and len(members) > 1:
            raise ValueError(
                f"Alternating updates (`n_dis`) step the {last!r} player apart "
                "from the others, so each player needs its own optimizer (its "
                "own step count and moments): pass "
                + ", ".join(f"`{n}_optimizer=`" for n in players)
                + f" instead of `optimizer=`. Received: n_dis={n_dis}."
            )
    return int(n_dis)


def step(game, data):
    """One alternating iteration of `game` on `n_dis + 1` stacked minibatches.

    The last player steps on minibatches `0..n_dis-1` in turn, each at the
    current point (so each after the previous step), then the other players
    step on minibatch `n_dis` at the updated point. Every evaluation is at
    the current weights and writes the non-trainable state (BatchNorm
    statistics) as a plain train step does.

    A step whose losses or gradients are non-finite is not applied, nor is
    any later step of the iteration; the discriminator's steps before it stay
    applied. The dynamic loss scale (mixed_float16) and the generator's
    averages (`_after_update`) move once per iteration, with the others'
    step.

    Each discriminator step is applied or skipped by the backend's
    conditional (`Game._cond`: `tf.cond` on every replica, `jax.lax.cond`).

    Returns:
        `(losses, finite, finite_losses)`: each player's loss (the last
        player's averaged over its steps, each from the evaluation its own
        step used) and whether every gradient / every loss was finite.
    """
    names = game.player_names
    last, others = names[-1], names[:-1]
    last_groups = [g for g in game._groups if last in g.players]
    other_groups = [g for g in game._groups if last not in g.players]
    finite = ops.convert_to_tensor(True)
    finite_losses = ops.convert_to_tensor(True)
    last_losses = []
    for m in range(game.n_dis):
        gradients, losses = game.gradients_at(
            game_data.take(data, m), game.current_point(), True, players=[last]
        )
        finite, finite_losses = _still_finite(finite, finite_losses, gradients, losses)
        last_losses.append(losses[last])

        def apply(gradients=gradients):
            game._apply(gradients, last_groups)

        game._cond(finite, apply, lambda: None)
    gradients, losses = game.gradients_at(
        game_data.take(data, game.n_dis), game.current_point(), True, players=others
    )
    finite, finite_losses = _still_finite(finite, finite_losses, gradients, losses)
    game._apply_if_finite(gradients, finite, other_groups)
    losses = dict(losses)
    losses[last] = functools.reduce(ops.add, last_losses) / float(game.n_dis)
    return losses, finite, finite_losses


def _still_finite(finite, finite_losses, gradients, losses):
    losses_ok = game_data.all_finite(list(losses.values()))
    gradients_ok = game_data.all_finite(gradients)
    return (
        ops.logical_and(finite, ops.logical_and(losses_ok, gradients_ok)),
        ops.logical_and(finite_losses, losses_ok),
    )
