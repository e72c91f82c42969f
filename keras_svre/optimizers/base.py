"""The base of the game optimizers, and the contract a `keras_svre.Game` relies on."""

import sys

import keras
import numpy as np
from keras import ops

from keras_svre.optimizers import step_rules

_PLAIN_FIT_MESSAGE = (
    "`{name}` is a game optimizer: it needs {what}, which a plain `Model.fit` "
    "cannot supply. Train a `keras_svre.Game` subclass instead (for GANs, "
    "`keras_svre.GAN`), whose `train_step` supplies them; for an ordinary "
    "Keras model use a plain optimizer such as `keras.optimizers.SGD`."
)


def check_learning_rate(learning_rate):
    """A positive number, or a schedule / callable whose first rate is positive."""
    if isinstance(learning_rate, bool) or isinstance(learning_rate, str):
        raise ValueError(
            "Argument `learning_rate` must be a positive number, a "
            "`LearningRateSchedule` or a callable. "
            f"Received: learning_rate={learning_rate!r}."
        )
    if isinstance(learning_rate, (int, float)):
        if not learning_rate > 0:  # also refuses NaN
            raise ValueError(
                "Argument `learning_rate` must be positive. "
                f"Received: learning_rate={learning_rate}."
            )
    elif isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        initial = float(ops.convert_to_numpy(learning_rate(0)))
        if not initial > 0:
            raise ValueError(
                "A `learning_rate` schedule must start positive. Received: a "
                f"{type(learning_rate).__name__} whose rate at step 0 is {initial}."
            )


def _is_number(value) -> bool:
    """A real number (a NumPy scalar too), not a bool or a string."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number))


def _check_number(name, value, rule):
    """Refuses a value that is not a number, e.g. `"0.9"` read from a file."""
    if not _is_number(value):
        raise ValueError(
            f"Argument `{name}` must be a number {rule}. "
            f"Received: {name}={value!r} (of type {type(value).__name__})."
        )


def _check_beta(name, value):
    _check_number(name, value, "in the [0, 1) range")
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"Argument `{name}` must be in the [0, 1) range. Received: {name}={value}."
        )


class GameOptimizer(keras.optimizers.Optimizer):
    """Base of the optimizers that a `keras_svre.Game` drives.

    A game optimizer declares how the game's train step must evaluate the
    game's vector field F, and turns the directions it is given into steps
    with a step rule (plain, Adam or VRAd; `adaptive`). The game reads the
    declarations and calls only the members below, all public; a new method
    is a subclass that sets the flags and implements what they imply.

    Declarations (class attributes):

    - `extrapolates`: the step takes a look-ahead point
      `w_half = extrapolate(d_i(w))` and updates with the field at `w_half`
      (two minibatches per iteration, i and j, unless the game is compiled
      with `one_minibatch=True`).
    - `variance_reduced`: every direction is `d(w) = F(w) - F(w_S) + mu_S`
      with a snapshot `w_S` and its full-data mean field `mu_S`; the game
      evaluates F at `snapshot_values(...)` on the same minibatch and calls
      `variance_reduced_gradient`, and after its snapshot pass
      `take_snapshot(variables, mean_gradients)`.

    What the game calls:

    - `build(variables)`: at `compile`, with the variables of the players it
      steps (so the slots exist before the first iteration);
    - `extrapolate(directions, variables)`: the look-ahead point as tensors
      (nothing is assigned), when `extrapolates`;
    - `apply_direction(directions, variables)`: the update. The directions
      are already the global-batch mean under a distribution strategy; this
      clips them as a whole (as on one device) and applies each replica's
      share through Keras' `apply`. Works for plain Keras optimizers too
      (`keras_svre.optimizers.apply_direction`);
    - `iterations`, `learning_rate`, `scale_loss`: Keras' own members.

    Variance-reduced optimizers add `snapshot_values`,
    `variance_reduced_gradient`, `take_snapshot`, `snapshots_taken`,
    `restart_probability` and the restart-from-average members (see `SVRE`).

    Subclasses override `build` (more slots) and `update_step` (to fold in
    more state) as Keras optimizers do; `_step(direction, variable, commit)`
    is the step rule. Used by a plain `Model.fit`, an optimizer that
    extrapolates or reduces variance raises an error that says why.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable with no arguments. The step size. Defaults to `0.01`.
        adaptive: `None` (plain steps), `"adam"` (Adam steps; the moments see
            only the update directions: the extrapolation uses the moments
            the update would produce, without storing them) or `"vrad"` (the
            rule `d * |m_hat| / (sqrt(v_hat) + eps)` of the SVRE authors'
            bilinear notebook). Defaults to `None`.
        beta_1: Adam's first-moment decay, for adaptive steps. Defaults to
            `0.9`.
        beta_2: Adam's second-moment decay, for adaptive steps. Defaults to
            `0.999`.
        epsilon: Adam's epsilon, for adaptive steps. Defaults to `1e-8`.
        **kwargs: Keras' common optimizer arguments (`weight_decay`,
            `clipnorm`, `clipvalue`, `global_clipnorm`, `use_ema`,
            `ema_momentum`, `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`, `name`), passed to Keras untouched.
            Clipping and loss-scale unscaling apply to the extrapolation too;
            weight decay applies to the update only.
    """

    #: Whether the game's train step must take a look-ahead step.
    extrapolates = False
    #: Whether the game's train step must supply snapshot gradients.
    variance_reduced = False

    def __init__(
        self,
        learning_rate=0.01,
        adaptive=None,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        check_learning_rate(learning_rate)
        if adaptive not in (None,) + step_rules.STEP_RULES[1:]:
            raise ValueError(
                "Argument `adaptive` must be None, 'adam' or 'vrad'. "
                f"Received: adaptive={adaptive!r}."
            )
        _check_beta("beta_1", beta_1)
        _check_beta("beta_2", beta_2)
        _check_number("epsilon", epsilon, ">= 0")
        # Keras' own checks of these come at the first step, or never.
        for name, value in (
            ("weight_decay", weight_decay),
            ("clipnorm", clipnorm),
            ("clipvalue", clipvalue),
            ("global_clipnorm", global_clipnorm),
            ("ema_momentum", ema_momentum),
        ):
            if value is not None:
                _check_number(name, value, "(or None)")
        if not epsilon >= 0:
            raise ValueError(
                f"Argument `epsilon` must be >= 0. Received: epsilon={epsilon}."
            )
        super().__init__(
            learning_rate=learning_rate,
            name=name or self.__class__.__name__.lower(),
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            **kwargs,
        )
        self.adaptive = adaptive
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self._applying_direction = False

    def build(self, var_list):
        """Creates the optimizer's slots: Adam's moments for adaptive steps.

        Args:
            var_list: The game's trainable variables this optimizer updates.
        """
        if self.built:
            return
        super().build(var_list)
        if self.adaptive:
            self._momentums, self._velocities = self.add_optimizer_variables(
                var_list, ["momentum", "velocity"]
            )

    def apply_direction(self, directions, variables):
        """Applies the game's update direction (see the class doc)."""
        directions = _replica_shares(self, directions)
        previous, self._applying_direction = self._applying_direction, True
        try:
            self.apply(directions, variables)
        finally:
            self._applying_direction = previous

    def apply(self, grads, trainable_variables=None):
        if not self._applying_direction and (
            self.extrapolates or self.variance_reduced
        ):
            points = [
                where
                for where, flag in (
                    ("at an extrapolated point", self.extrapolates),
                    ("at a snapshot", self.variance_reduced),
                )
                if flag
            ]
            what = "the gradient " + " and ".join(points)
            raise TypeError(
                _PLAIN_FIT_MESSAGE.format(name=type(self).__name__, what=what)
            )
        return super().apply(grads, trainable_variables)

    def _step(self, direction, variable, commit):
        """The step for `direction` under the step rule; commits the state if asked."""
        if not self.adaptive:
            return step_rules.sgd_step(direction)
        index = self._get_variable_index(variable)
        momentum = self._momentums[index]
        velocity = self._velocities[index]
        count = ops.cast(self.iterations + 1, variable.dtype)
        rule = step_rules.adam_step if self.adaptive == "adam" else step_rules.vrad_step
        step, new_momentum, new_velocity = rule(
            direction,
            momentum,
            velocity,
            count,
            # convert_to_tensor with the dtype, not cast: a cast would round
            # the Python float through float32 first.
            ops.convert_to_tensor(self.beta_1, dtype=variable.dtype),
            ops.convert_to_tensor(self.beta_2, dtype=variable.dtype),
            ops.convert_to_tensor(self.epsilon, dtype=variable.dtype),
        )
        if commit:
            self.assign(momentum, new_momentum)
            self.assign(velocity, new_velocity)
        return step

    def extrapolate(self, directions, variables, points=None):
        """The look-ahead point `w - lr * step(direction)`, as tensors.

        No variable changes: the point is meant for a stateless evaluation of
        the game (`keras.StatelessScope`), not for assignment.

        Args:
            directions: One direction per variable (the stochastic gradient,
                or for SVRE the variance-reduced gradient).
            variables: The variables the directions belong to; the optimizer
                must have been built with them.
            points: Optional values to extrapolate from instead of the
                variables' current values.

        Returns:
            A list of tensors, one per variable.
        """
        self._check_variables_are_known(variables)
        directions = list(directions)
        scale = self.loss_scale_factor
        if scale is not None:
            directions = [d / scale for d in directions]
        directions = self._clip_gradients(directions)
        if points is None:
            points = [v.value for v in variables]
        result = []
        for direction, variable, point in zip(directions, variables, points):
            direction = ops.cast(direction, variable.dtype)
            lr = ops.cast(self.learning_rate, variable.dtype)
            result.append(point - lr * self._step(direction, variable, commit=False))
        return result

    def update_step(self, gradient, variable, learning_rate):
        """The update `w <- w - lr * step(direction)`, committing the rule's state."""
        lr = ops.cast(learning_rate, variable.dtype)
        direction = ops.cast(gradient, variable.dtype)
        self.assign_sub(variable, lr * self._step(direction, variable, commit=True))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "adaptive": self.adaptive,
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
            }
        )
        return config


def _replica_shares(optimizer, directions):
    """Each replica's share of global-batch directions, clipped as a whole.

    Keras' `apply` sums the replicas' gradients, clipping each replica's share
    first; a game's directions are already the global mean, so the whole
    direction is clipped here (as on one device) and each replica passes
    `1/replicas` of it, which Keras' clipping then leaves unchanged.
    """
    replicas = _replicas_in_sync()
    if replicas == 1:
        return list(directions)
    return [d / replicas for d in optimizer._clip_gradients(list(directions))]


def _replicas_in_sync() -> int:
    """Replicas a step runs on in sync: >1 only under a `tf.distribute` strategy.

    On JAX the step is written for the global batch (SPMD), even across
    devices, so the directions are applied whole.
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    tf = sys.modules["tensorflow"]
    return tf.distribute.get_strategy().num_replicas_in_sync


def apply_direction(optimizer, directions, variables):
    """`optimizer.apply_direction(...)`, for plain Keras optimizers too (SGDA)."""
    if isinstance(optimizer, GameOptimizer):
        optimizer.apply_direction(directions, variables)
    else:
        optimizer.apply(_replica_shares(optimizer, directions), variables)


def extrapolates(optimizer) -> bool:
    """Whether an optimizer (or its class) takes look-ahead steps (False for
    plain Keras ones)."""
    return bool(getattr(optimizer, "extrapolates", False))


def variance_reduced(optimizer) -> bool:
    """Whether an optimizer (or its class) needs snapshot gradients (False for
    plain Keras ones)."""
    return bool(getattr(optimizer, "variance_reduced", False))
