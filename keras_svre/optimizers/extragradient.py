"""Stochastic extragradient (SE), the base of the game optimizers."""

import contextlib

import keras
from keras import ops

from keras_svre.optimizers import step_rules

_PLAIN_FIT_MESSAGE = (
    "`{name}` is a game optimizer: it needs the gradient at an extrapolated "
    "point{snapshot}, which a plain `Model.fit` cannot supply. Train a "
    "`keras_svre.Game` subclass instead (for GANs, `keras_svre.GAN`), whose "
    "`train_step` runs the extrapolation and the update; for an ordinary "
    "Keras model use a plain optimizer such as `keras.optimizers.SGD`."
)


def _check_learning_rate(learning_rate):
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


def _check_beta(name, value):
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"Argument `{name}` must be in the [0, 1) range. Received: {name}={value}."
        )


@keras.saving.register_keras_serializable(package="keras_svre")
class Extragradient(keras.optimizers.Optimizer):
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
        **kwargs: Keras' common optimizer arguments (`weight_decay`,
            `clipnorm`, `clipvalue`, `global_clipnorm`, `use_ema`,
            `ema_momentum`, `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`, `name`), passed to Keras untouched.
            Clipping and loss-scale unscaling apply to the extrapolation too;
            weight decay applies to the update only.

    References:
        - [Korpelevich, 1976](https://ideas.repec.org/a/ftn/journl/y1976v12i4p747-756.html)
        - [Gidel et al., 2019](https://arxiv.org/abs/1802.10551): extragradient
          and its Adam variant for GANs.
    """

    #: Whether the game's train step must take a look-ahead step.
    extrapolates = True
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
        _check_learning_rate(learning_rate)
        if adaptive not in (None,) + step_rules.STEP_RULES[1:]:
            raise ValueError(
                "Argument `adaptive` must be None, 'adam' or 'vrad'. "
                f"Received: adaptive={adaptive!r}."
            )
        _check_beta("beta_1", beta_1)
        _check_beta("beta_2", beta_2)
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
        self._in_game_step = False

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

    @contextlib.contextmanager
    def game_step(self):
        """Marks the calls made by a game's train step (see the class doc)."""
        previous, self._in_game_step = self._in_game_step, True
        try:
            yield
        finally:
            self._in_game_step = previous

    def apply(self, grads, trainable_variables=None):
        if not self._in_game_step:
            snapshot = " and at a snapshot" if self.variance_reduced else ""
            raise TypeError(
                _PLAIN_FIT_MESSAGE.format(name=type(self).__name__, snapshot=snapshot)
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
