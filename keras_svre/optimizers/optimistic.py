"""Optimistic gradient descent-ascent (OGDA) and optimistic Adam."""

import keras
from keras import ops

from keras_svre.optimizers.base import GameOptimizer


@keras.saving.register_keras_serializable(package="keras_svre")
class Optimistic(GameOptimizer):
    """Optimistic gradient descent-ascent (OGDA) and optimistic Adam.

    One gradient per iteration, like SGDA, but each step is corrected by the
    previous one:

        s_t = step(F_i(w_t))
        w_{t+1} = w_t - lr * (2 * s_t - s_{t-1})

    with `s_0 = 0` (the first update is `w_1 = w_0 - 2 * lr * s_1`). With
    plain steps (`adaptive=None`, method `"ogda"`) `s_t` is the stochastic
    gradient itself, the optimistic mirror descent of Daskalakis et al.
    (2018), `w_{t+1} = w_t - 2 lr g_t + lr g_{t-1}`. With `adaptive="adam"`
    (method `"optimistic-adam"`) `s_t` is Adam's bias-corrected step
    `m_hat_t / (sqrt(v_hat_t) + epsilon)` and this is their Algorithm 1,
    Optimistic Adam:

        w_t = w_{t-1} - 2 lr m_hat_t / (sqrt(v_hat_t) + eps)
                      + lr m_hat_{t-1} / (sqrt(v_hat_{t-1}) + eps)

    (with `m_0 = 0`, so `s_0 = 0`; some implementations take `s_1` alone as
    the first step instead). The previous step `s_{t-1}` is kept in the slot
    `previous_step`, saved with the optimizer like Adam's moments. The current
    learning rate multiplies both terms (under a schedule, `s_{t-1}` is
    re-weighted by the current rate, not the one it was taken with).

    OGDA needs no look-ahead and no snapshot (`extrapolates` and
    `variance_reduced` are `False`): a `keras_svre.Game` steps it as it steps
    SGDA, and unlike `Extragradient` and `SVRE` it also works as the
    optimizer of an ordinary Keras model in a plain `Model.fit`.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable with no arguments. The step size. Defaults to `0.01`.
        adaptive: `None` (plain steps, OGDA), `"adam"` (Adam steps,
            optimistic Adam) or `"vrad"` (the rule `d * |m_hat| /
            (sqrt(v_hat) + eps)`, composed like the other step rules).
            Defaults to `None`.
        beta_1: Adam's first-moment decay, for adaptive steps. Defaults to
            `0.9`.
        beta_2: Adam's second-moment decay, for adaptive steps. Defaults to
            `0.999`.
        epsilon: Adam's epsilon, for adaptive steps. Defaults to `1e-8`.
        **kwargs: Keras' common optimizer arguments (see `GameOptimizer`).
            Clipping applies to the gradient before the step rule; weight
            decay is Keras' own (decoupled, applied before the update).

    References:
        - [Daskalakis et al., 2018](https://arxiv.org/abs/1711.00141):
          Training GANs with Optimism (OGDA, Section 2; Optimistic Adam,
          Algorithm 1).
        - [Gidel et al., 2019](https://arxiv.org/abs/1802.10551): the same
          update as extrapolation from the past (Popov, 1980).
    """

    extrapolates = False
    variance_reduced = False

    def build(self, var_list):
        """Creates the slot `previous_step` (and Adam's moments for adaptive steps).

        Args:
            var_list: The variables this optimizer updates.
        """
        if self.built:
            return
        super().build(var_list)
        self._previous_steps = self.add_optimizer_variables(var_list, "previous_step")

    def update_step(self, gradient, variable, learning_rate):
        """The update `w <- w - lr * (2 * s_t - s_{t-1})`, then `s_{t-1} <- s_t`."""
        lr = ops.cast(learning_rate, variable.dtype)
        direction = ops.cast(gradient, variable.dtype)
        step = self._step(direction, variable, commit=True)
        previous = self._previous_steps[self._get_variable_index(variable)]
        self.assign_sub(variable, lr * (2.0 * step - previous))
        self.assign(previous, step)
