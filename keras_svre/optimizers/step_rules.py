"""Step rules shared by the game optimizers.

A step rule turns a direction estimate (a plain stochastic gradient for SE, the
variance-reduced gradient for SVRE) into the step that is multiplied by the
learning rate. Keeping the rules here lets `Extragradient` and `SVRE` compose
them instead of copying them, the way Optax composes gradient transformations.

Each rule is a pure function of the direction and the rule's state: it returns
the step and the state it would leave behind, and the optimizer decides whether
to commit that state (the update does, the extrapolation does not).
"""

from keras import ops

STEP_RULES = ("sgd", "adam", "vrad")


def sgd_step(direction):
    """The plain step: the direction itself."""
    return direction


def adam_moments(direction, momentum, velocity, beta_1, beta_2):
    """Adam's moment updates for one direction; returns the new (m, v)."""
    new_momentum = beta_1 * momentum + (1.0 - beta_1) * direction
    new_velocity = beta_2 * velocity + (1.0 - beta_2) * ops.square(direction)
    return new_momentum, new_velocity


def adam_step(direction, momentum, velocity, count, beta_1, beta_2, epsilon):
    """Adam's step for `direction`, with bias correction at step `count` (>= 1).

    Returns:
        A tuple `(step, new_momentum, new_velocity)`.
    """
    m, v = adam_moments(direction, momentum, velocity, beta_1, beta_2)
    m_hat = m / (1.0 - ops.power(beta_1, count))
    v_hat = v / (1.0 - ops.power(beta_2, count))
    return m_hat / (ops.sqrt(v_hat) + epsilon), m, v


def vrad_step(direction, momentum, velocity, count, beta_1, beta_2, epsilon):
    """The SVRE-VRAd step of the authors' bilinear notebook.

    `direction * |m_hat| / (sqrt(v_hat) + epsilon)`: the variance-reduced
    direction keeps its own sign and is rescaled per coordinate by Adam's
    moment ratio (with `beta_1 = 0` this is `d * |d| / sqrt(v_hat)`).

    Returns:
        A tuple `(step, new_momentum, new_velocity)`.
    """
    m, v = adam_moments(direction, momentum, velocity, beta_1, beta_2)
    m_hat = m / (1.0 - ops.power(beta_1, count))
    v_hat = v / (1.0 - ops.power(beta_2, count))
    return direction * ops.abs(m_hat) / (ops.sqrt(v_hat) + epsilon), m, v
