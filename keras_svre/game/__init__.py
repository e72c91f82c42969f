"""The generic game and its train step.

- `core`: `Game` (compile, the train step, fit);
- `compiling`: the steps of `Game.compile` (the optimizers per player, the
  method they declare, where each player's variables are);
- `compiled`: what a compiled game tells (its optimizers, players, counts,
  learning rates), a base class of `Game`;
- `snapshots`: SVRE's snapshot pass, restart draws and their schedule;
- `alternating`: alternating updates (`n_dis` discriminator steps per
  generator step);
- `data`: stacking minibatches for a step, and the data checks;
- `loss_scaling`: the game's dynamic loss scaling (mixed_float16).
"""

from keras_svre.game.core import UPDATE_POINTS, Game

__all__ = ["UPDATE_POINTS", "Game"]
