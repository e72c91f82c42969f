"""Game optimizers: SVRE and the baselines it is compared with.

| method            | what it is                                   | class                          |
|-------------------|----------------------------------------------|--------------------------------|
| `sgda`            | simultaneous gradient steps                  | `keras.optimizers.SGD`         |
| `adam`            | simultaneous Adam steps (SGDA with Adam)     | `keras.optimizers.Adam`        |
| `ogda`            | optimistic gradient descent-ascent           | `Optimistic`                   |
| `optimistic-adam` | optimistic Adam (Daskalakis et al., 2018)    | `Optimistic(adaptive="adam")`  |
| `se`              | stochastic extragradient                     | `Extragradient`                |
| `se-a`            | stochastic extragradient with Adam steps     | `Extragradient(adaptive="adam")` |
| `svre`            | SVRE (Algorithm 1 of the paper)              | `SVRE`                         |
| `svre-vrad`       | SVRE with Adam steps (the authors' GAN code) | `SVRE(adaptive="adam")`        |
| `svre-opt`        | SVRE, estimated optimal coefficient alpha    | `SVRE(vr_coefficient="optimal")` |
| `svre-vrad-opt`   | SVRE-VRAd, estimated optimal coefficient     | `SVRE(adaptive="adam", vr_coefficient="optimal")` |

The table itself is `keras_svre.optimizers.methods.METHODS`. Any plain Keras
optimizer used in a `keras_svre.Game` gives simultaneous steps (SGDA); a
`GameOptimizer` declares whether the game's step extrapolates
(`Extragradient`) and reduces variance (`SVRE`). `Optimistic` does neither:
one gradient per iteration, as SGDA, each step corrected by the previous
one (`w <- w - lr * (2 s_t - s_{t-1})`).
"""

import keras

from keras_svre.optimizers.base import (
    GameOptimizer,
    apply_direction,
    extrapolates,
    variance_reduced,
)
from keras_svre.optimizers.extragradient import Extragradient
from keras_svre.optimizers.methods import METHODS as METHOD_TABLE
from keras_svre.optimizers.methods import Method, method
from keras_svre.optimizers.optimistic import Optimistic
from keras_svre.optimizers.svre import SVRE

#: The method names (see `keras_svre.optimizers.methods.METHODS`).
METHODS = tuple(METHOD_TABLE)

# `keras.optimizers.get("svre")` (and "extragradient", "optimistic"), as for
# Keras' own optimizers: their lower-case names, through Keras' public registry.
keras.saving.get_custom_objects().update(
    {"svre": SVRE, "extragradient": Extragradient, "optimistic": Optimistic}
)


def get(method_name: str, learning_rate=None, **kwargs) -> keras.optimizers.Optimizer:
    """Builds the optimizer of a method by name.

    Args:
        method_name: One of `METHODS` (case-insensitive; `_` and `-` are the
            same).
        learning_rate: The step size; `None` keeps each class's default.
        **kwargs: Further constructor arguments (for Adam-based methods
            `beta_1`, `beta_2`, `epsilon`; for SVRE `restart_probability`,
            `average_restart_probability`, `restart_correlation`,
            `vr_coefficient` and its settings; Keras' common arguments).

    Returns:
        A new optimizer.

    Raises:
        ValueError: for an unknown method.
    """
    return method(method_name).build(learning_rate, **kwargs)


__all__ = [
    "METHODS",
    "SVRE",
    "Extragradient",
    "GameOptimizer",
    "Method",
    "Optimistic",
    "apply_direction",
    "extrapolates",
    "get",
    "method",
    "variance_reduced",
]
