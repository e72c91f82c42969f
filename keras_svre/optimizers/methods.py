"""The method table: one entry per method name, and what each iteration costs.

Everything that needs to know a method (the optimizer to build, its default
step size, whether it is Adam-based, how many minibatches and gradient
evaluations one iteration takes) reads it here: `keras_svre.optimizers.get`,
the command line, the presets, the benchmarks and the budget counting.

How a method steps is not restated: it follows from what its optimizer
declares (`extrapolates`, `variance_reduced`; see `GameOptimizer`). Adding a
method is an entry in `METHODS` (and, for a new kind of step, its optimizer).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Mapping

import keras

from keras_svre.optimizers.base import extrapolates, variance_reduced
from keras_svre.optimizers.extragradient import Extragradient
from keras_svre.optimizers.optimistic import Optimistic
from keras_svre.optimizers.svre import SVRE

# Constructor arguments that belong to a kind of method: Adam's (for
# Adam-based methods), the snapshot schedule's and the correction
# coefficient's (for variance-reduced ones).
ADAM_ARGUMENTS = ("beta_1", "beta_2", "epsilon")
SNAPSHOT_ARGUMENTS = (
    "restart_probability",
    "average_restart_probability",
    "restart_correlation",
)
COEFFICIENT_ARGUMENTS = (
    "vr_coefficient",
    "vr_statistics_decay",
    "vr_statistics_reset",
    "vr_coefficient_max",
)


def minibatches_per_iteration(
    extrapolates: bool, one_minibatch: bool = False, n_dis: int | None = None
) -> int:
    """Dataset minibatches one iteration consumes (i, and j for the update).

    With alternating updates (`n_dis` discriminator steps, then a generator
    step), each step reads a minibatch of its own: `n_dis + 1`.
    """
    if n_dis is not None:
        return n_dis + 1
    return 2 if extrapolates and not one_minibatch else 1


def evaluations_per_iteration(
    extrapolates: bool,
    variance_reduced: bool,
    one_minibatch: bool = False,
    n_dis: int | None = None,
) -> int:
    """Minibatch evaluations of the game's field per iteration (the paper's unit).

    One at the current point, one more at the look-ahead point when the method
    extrapolates, and for variance reduction one at the snapshot per minibatch
    the iteration reads: SGDA and OGDA 1, SE 2, SVRE 4 (3 with one minibatch).
    Alternating updates evaluate once per step, `n_dis + 1` (each step takes
    one player's gradient only, but runs the forward and backward pass of a
    whole evaluation on its minibatch).
    """
    if n_dis is not None:
        return n_dis + 1
    evaluations = 2 if extrapolates else 1
    if variance_reduced:
        evaluations += minibatches_per_iteration(extrapolates, one_minibatch)
    return evaluations


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of the table.

    Attributes:
        name: The method's name (`keras-svre train --method NAME`).
        summary: What it is, in a few words.
        optimizer: The optimizer class.
        options: Constructor arguments that make the class this method (e.g.
            `adaptive="adam"`); they cannot be overridden.
        learning_rate: The default step size (the paper's MNIST setting).
        adam_based: Whether the steps are Adam's (takes `beta_1`, `beta_2`,
            `epsilon`).
    """

    name: str
    summary: str
    optimizer: type
    options: Mapping = dataclasses.field(default_factory=dict)
    learning_rate: float = 1e-2
    adam_based: bool = False

    def __post_init__(self):
        object.__setattr__(self, "options", types.MappingProxyType(dict(self.options)))

    @property
    def extrapolates(self) -> bool:
        """Whether an iteration takes a look-ahead step (from the optimizer)."""
        return extrapolates(self.optimizer)

    @property
    def variance_reduced(self) -> bool:
        """Whether an iteration uses snapshot gradients (from the optimizer)."""
        return variance_reduced(self.optimizer)

    @property
    def alternates(self) -> bool:
        """Whether the method can take alternating updates (`n_dis`): it steps
        one player at a time from one gradient (no look-ahead, no snapshot)."""
        return not (self.extrapolates or self.variance_reduced)

    def minibatches_per_iteration(
        self, one_minibatch: bool = False, n_dis: int | None = None
    ) -> int:
        return minibatches_per_iteration(self.extrapolates, one_minibatch, n_dis)

    def evaluations_per_iteration(
        self, one_minibatch: bool = False, n_dis: int | None = None
    ) -> int:
        return evaluations_per_iteration(
            self.extrapolates, self.variance_reduced, one_minibatch, n_dis
        )

    def applicable(self, **arguments) -> dict:
        """The given arguments this method takes; the others are dropped.

        Adam's arguments go to Adam-based methods only, the snapshot schedule's
        and the correction coefficient's to variance-reduced ones only, and
        `None` values are dropped, so that one set of run settings builds any
        method.
        """
        dropped = set()
        if not self.adam_based:
            dropped.update(ADAM_ARGUMENTS)
        if not self.variance_reduced:
            dropped.update(SNAPSHOT_ARGUMENTS + COEFFICIENT_ARGUMENTS)
        return {
            k: v for k, v in arguments.items() if k not in dropped and v is not None
        }

    def build(self, learning_rate=None, **kwargs) -> keras.optimizers.Optimizer:
        """A new optimizer of this method.

        Args:
            learning_rate: The step size; `None`: the class's default.
            **kwargs: Further constructor arguments.
        """
        if not self.variance_reduced:
            for key in COEFFICIENT_ARGUMENTS:
                if key in kwargs:
                    reduced = [m.name for m in METHODS.values() if m.variance_reduced]
                    raise ValueError(
                        f"Method {self.name!r} has no variance reduction: `{key}` "
                        f"applies to {', '.join(reduced)} only. "
                        f"Received: {key}={kwargs[key]!r}."
                    )
        for key, value in self.options.items():
            if key in kwargs and kwargs[key] != value:
                raise ValueError(
                    f"Method {self.name!r} is built with {key}={value!r}. "
                    f"Received: {key}={kwargs[key]!r}; choose the method that "
                    f"has {key}={kwargs[key]!r} instead."
                )
        if learning_rate is not None:
            kwargs["learning_rate"] = learning_rate
        return self.optimizer(**{**kwargs, **self.options})


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("sgda", "simultaneous gradient steps", keras.optimizers.SGD),
        Method(
            "adam",
            "simultaneous Adam steps (SGDA with Adam)",
            keras.optimizers.Adam,
            learning_rate=1e-3,
            adam_based=True,
        ),
        Method("ogda", "optimistic gradient descent-ascent", Optimistic),
        Method(
            "optimistic-adam",
            "optimistic Adam (Daskalakis et al., 2018)",
            Optimistic,
            {"adaptive": "adam"},
            learning_rate=1e-3,
            adam_based=True,
        ),
        Method("se", "stochastic extragradient", Extragradient),
        Method(
            "se-a",
            "stochastic extragradient with Adam steps",
            Extragradient,
            {"adaptive": "adam"},
            learning_rate=1e-3,
            adam_based=True,
        ),
        Method("svre", "SVRE (Algorithm 1 of the paper)", SVRE),
        Method(
            "svre-vrad",
            "SVRE with Adam steps (the authors' GAN code)",
            SVRE,
            {"adaptive": "adam"},
            learning_rate=1e-3,
            adam_based=True,
        ),
        Method(
            "svre-opt",
            "SVRE with the estimated optimal coefficient on its correction",
            SVRE,
            {"vr_coefficient": "optimal"},
        ),
        Method(
            "svre-vrad-opt",
            "SVRE-VRAd with the estimated optimal coefficient on its correction",
            SVRE,
            {"adaptive": "adam", "vr_coefficient": "optimal"},
            learning_rate=1e-3,
            adam_based=True,
        ),
    )
}


def names() -> list[str]:
    """The method names, in the table's order."""
    return list(METHODS)


def canonical(name: str) -> str:
    """A method name as the table spells it (lower case, `-` for `_`)."""
    return str(name).lower().replace("_", "-")


def method(name: str) -> Method:
    """The table's entry for `name` (case-insensitive; `_` and `-` alike).

    Raises:
        ValueError: for an unknown name, listing the known ones.
    """
    key = canonical(name)
    if key not in METHODS:
        raise ValueError(
            f"Unknown method {name!r}. Choose one of: {', '.join(METHODS)}."
        )
    return METHODS[key]
