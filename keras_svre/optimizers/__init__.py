"""Game optimizers: SVRE and the baselines it is compared with.

| method      | what it is                                   | class                          |
|-------------|----------------------------------------------|--------------------------------|
| `sgda`      | simultaneous gradient steps                  | `keras.optimizers.SGD`         |
| `adam`      | simultaneous Adam steps (SGDA with Adam)     | `keras.optimizers.Adam`        |
| `se`        | stochastic extragradient                     | `Extragradient`                |
| `se-a`      | stochastic extragradient with Adam steps     | `Extragradient(adaptive="adam")` |
| `svre`      | SVRE (Algorithm 1 of the paper)              | `SVRE`                         |
| `svre-vrad` | SVRE with Adam steps (the authors' GAN code) | `SVRE(adaptive="adam")`        |

Any plain Keras optimizer used in a `keras_svre.Game` gives simultaneous
steps (SGDA); `Extragradient` and `SVRE` switch the game's train step to
extrapolation, and SVRE to variance reduction.
"""

import keras

from keras_svre.optimizers.extragradient import Extragradient
from keras_svre.optimizers.svre import SVRE

METHODS = ("sgda", "adam", "se", "se-a", "svre", "svre-vrad")

# `keras.optimizers.get("svre")` (and "extragradient"), as for Keras' own
# optimizers: their lower-case names, through Keras' public registry.
keras.saving.get_custom_objects().update({"svre": SVRE, "extragradient": Extragradient})


def get(method: str, learning_rate=None, **kwargs) -> keras.optimizers.Optimizer:
    """Builds the optimizer of a method by name.

    Args:
        method: One of `METHODS` (case-insensitive; `_` and `-` are the same).
        learning_rate: The step size; `None` keeps each class's default.
        **kwargs: Further constructor arguments (for Adam-based methods
            `beta_1`, `beta_2`, `epsilon`; for SVRE `restart_probability`,
            `average_restart_probability`; Keras' common arguments).

    Returns:
        A new optimizer.

    Raises:
        ValueError: for an unknown method.
    """
    key = method.lower().replace("_", "-")
    if learning_rate is not None:
        kwargs["learning_rate"] = learning_rate
    if key == "sgda":
        return keras.optimizers.SGD(**kwargs)
    if key == "adam":
        return keras.optimizers.Adam(**kwargs)
    if key in ("se-a", "svre-vrad"):
        if kwargs.get("adaptive", "adam") != "adam":
            raise ValueError(
                f"Method {method!r} uses Adam steps (adaptive='adam'). Received: "
                f"adaptive={kwargs['adaptive']!r}; use 'se'/'svre' with `adaptive=`."
            )
        kwargs["adaptive"] = "adam"
    if key in ("se", "se-a"):
        return Extragradient(**kwargs)
    if key in ("svre", "svre-vrad"):
        return SVRE(**kwargs)
    raise ValueError(f"Unknown method {method!r}. Choose one of: {', '.join(METHODS)}.")


__all__ = ["METHODS", "SVRE", "Extragradient", "get"]
