"""Stochastic extragradient (SE, SE-A)."""

import keras

from keras_svre.optimizers.base import GameOptimizer


@keras.saving.register_keras_serializable(package="keras_svre")
class Extragradient(GameOptimizer):
    """Stochastic extragradient (SE), and SE with Adam steps (SE-A).

    One iteration on a game with vector field `F` takes a look-ahead step and
    then updates from the current point with the field at the look-ahead:

        w_half = w - lr * step(F_i(w))          # extrapolation, minibatch i
        w      = w - lr * step(F_j(w_half))     # update, minibatch j

    The optimizer computes `w_half` (`extrapolate`) without changing any
    variable, and applies the update through Keras' normal `apply` path, so
    learning-rate schedules, gradient clipping, EMA and loss scaling work as
    with any Keras optimizer. The gradients come from a `keras_svre.Game`:
    used in a plain `Model.fit` it raises an error that says so.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable with no arguments. The step size. Defaults to `0.01`.
        adaptive: `None` (plain steps, SE), `"adam"` (Adam steps, SE-A: the
            moments see only the update directions; the extrapolation uses the
            moments the update would produce, without storing them) or
            `"vrad"` (the rule `d * |m_hat| / (sqrt(v_hat) + eps)` of the
            authors' bilinear notebook, their SVRE-VRAd). Defaults to `None`.
        beta_1: Adam's first-moment decay, for adaptive steps. Defaults to
            `0.9`.
        beta_2: Adam's second-moment decay, for adaptive steps. Defaults to
            `0.999`.
        epsilon: Adam's epsilon, for adaptive steps. Defaults to `1e-8`.
        **kwargs: Keras' common optimizer arguments (see `GameOptimizer`).

    References:
        - [Korpelevich, 1976](https://ideas.repec.org/a/ftn/journl/y1976v12i4p747-756.html)
        - [Gidel et al., 2019](https://arxiv.org/abs/1802.10551): extragradient
          and its Adam variant for GANs.
    """

    extrapolates = True
