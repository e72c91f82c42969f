"""What `Game.compile` works out from its arguments, step by step.

- `given_optimizers`: the optimizer of each player, from `optimizer=` or the
  `<player>_optimizer=` arguments (and `check_update_point`);
- `unwrapped`: the same with `LossScaleOptimizer`s unwrapped (the method is
  their inner optimizer's), each instance once;
- `choose_method`: the method those optimizers declare (extrapolating,
  variance-reduced, alternating) and the options that fit it;
- `place_players`: where each player's variables are among the game's, and
  the groups of players that share an optimizer (each optimizer built).

The loss-scale state is `keras_svre.game.loss_scaling`'s.
"""

from __future__ import annotations

from typing import NamedTuple

import keras

from keras_svre import optimizers as game_optimizers
from keras_svre.game import alternating, loss_scaling

UPDATE_POINTS = ("extrapolated", "opponent_extrapolated")


class Group:
    """Players that share one optimizer, and where their variables are."""

    def __init__(self, optimizer, players, indices, variables):
        self.optimizer = optimizer
        self.players = tuple(players)
        self.indices = list(indices)
        self.variables = list(variables)


class Method(NamedTuple):
    """How the game steps, as its optimizers declare it."""

    extrapolates: bool
    variance_reduced: bool
    n_dis: int | None


def given_optimizers(names, optimizer, player_optimizers):
    """`[(optimizer, [player names])]` from `compile`'s arguments, checked."""
    unknown = set(player_optimizers) - {f"{n}_optimizer" for n in names}
    if unknown:
        raise ValueError(
            f"Unknown compile arguments {sorted(unknown)}. This game's players "
            f"are {names}: pass `optimizer=` or "
            f"{', '.join(f'`{n}_optimizer=`' for n in names)}."
        )
    if optimizer is not None and player_optimizers:
        raise ValueError(
            "Pass either `optimizer` (one for all players) or one "
            "`<player>_optimizer` per player, not both."
        )
    if optimizer is None and not player_optimizers:
        raise ValueError(
            "No optimizer given: pass `optimizer=keras_svre.SVRE(...)` or "
            f"one per player ({', '.join(f'{n}_optimizer' for n in names)})."
        )
    if player_optimizers and len(player_optimizers) != len(names):
        missing = [n for n in names if f"{n}_optimizer" not in player_optimizers]
        raise ValueError(f"No optimizer given for player(s) {missing}.")
    if optimizer is not None:
        return [(keras.optimizers.get(optimizer), names)]
    return [
        (keras.optimizers.get(player_optimizers[f"{n}_optimizer"]), [n]) for n in names
    ]


def check_update_point(update_point) -> None:
    """Refuses an `update_point` that is not one of `UPDATE_POINTS`."""
    if update_point not in UPDATE_POINTS:
        raise ValueError(
            f"Argument `update_point` must be one of {UPDATE_POINTS}. "
            f"Received: update_point={update_point!r}."
        )


def unwrapped(given):
    """`given` with each `LossScaleOptimizer` replaced by its inner optimizer.

    A `LossScaleOptimizer` is recognised: the game runs its dynamic scaling
    (see `loss_scaling.settings`) and the method is its inner optimizer's.

    Args:
        given: `[(optimizer, [player names])]`.

    Raises:
        ValueError: when one optimizer instance was given for several
            players.
    """
    inner = [(loss_scaling.unwrap(opt), members) for opt, members in given]
    optimizers = [opt for opt, _ in inner]
    if len({id(o) for o in optimizers}) != len(optimizers):
        raise ValueError(
            "The same optimizer instance was given for several players: "
            "pass `optimizer=` once for all players, or a separate instance "
            "per player."
        )
    return inner


def choose_method(names, given_inner, one_minibatch, n_dis) -> Method:
    """The method the optimizers declare, with `one_minibatch` and `n_dis` checked.

    Args:
        names: The game's player names, in order.
        given_inner: `[(optimizer, [player names])]`, unwrapped.
        one_minibatch: `compile`'s `one_minibatch`.
        n_dis: `compile`'s `n_dis`.

    Raises:
        ValueError: when the optimizers declare different methods, or an
            option does not fit the method.
    """
    optimizers = [opt for opt, _ in given_inner]
    kinds = {
        (game_optimizers.extrapolates(o), game_optimizers.variance_reduced(o))
        for o in optimizers
    }
    if len(kinds) > 1:
        raise ValueError(
            "All players must use the same family of method (optimizers "
            "that declare the same `extrapolates` and `variance_reduced`: "
            "plain Keras, `Extragradient` or `SVRE`). Received: "
            f"{sorted(type(o).__name__ for o in optimizers)}."
        )
    extrapolates, variance_reduced = kinds.pop()
    if one_minibatch and not extrapolates:
        raise ValueError(
            "`one_minibatch=True` only applies to extragradient methods "
            "(optimizers that extrapolate: Extragradient, SVRE)."
        )
    n_dis = alternating.check(n_dis, names, given_inner, extrapolates, variance_reduced)
    return Method(extrapolates, variance_reduced, n_dis)


def place_players(player_vars, names, given_inner):
    """Where each player's variables are, and the groups sharing an optimizer.

    Each group's optimizer is built on its variables here, not lazily at the
    first apply: the train step reads the slots (snapshot, mean gradient)
    before any update.

    Args:
        player_vars: `players()`: `{name: trainable variables}`.
        names: The player names, in order.
        given_inner: `[(optimizer, [player names])]`, unwrapped.

    Returns:
        `(game_variables, player_slices, groups)`: every player's variables,
        player after player; `{name: slice of game_variables}`; a `Group` per
        optimizer.

    Raises:
        ValueError: when the players own no variables (networks not built).
    """
    game_variables = [v for n in names for v in player_vars[n]]
    if not game_variables:
        raise ValueError(
            "The game's players own no variables: build the networks "
            "before compiling (e.g. call them once on a batch)."
        )
    player_slices, start = {}, 0
    for n in names:
        player_slices[n] = slice(start, start + len(player_vars[n]))
        start += len(player_vars[n])
    groups = []
    for opt, members in given_inner:
        where = [player_slices[n] for n in members]
        indices = [i for s in where for i in range(s.start, s.stop)]
        variables = [game_variables[i] for i in indices]
        opt.build(variables)
        groups.append(Group(opt, members, indices, variables))
    return game_variables, player_slices, groups
