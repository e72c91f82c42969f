"""Stochastic variance-reduced extragradient (SVRE)."""

import keras
from keras import ops

from keras_svre.optimizers.extragradient import Extragradient


def _check_probability(name, value, allow_zero):
    interval = "[0, 1]" if allow_zero else "(0, 1]"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if not (hasattr(value, "dtype") and getattr(value, "shape", None) == ()):
            raise ValueError(
                f"Argument `{name}` must be a number in the {interval} range. "
                f"Received: {name}={value!r} (of type {type(value).__name__})."
            )
        value = float(value)
    low_ok = value >= 0.0 if allow_zero else value > 0.0
    if not (low_ok and value <= 1.0):  # also refuses NaN
        raise ValueError(
            f"Argument `{name}` must be in the {interval} range. "
            f"Received: {name}={value}."
        )


@keras.saving.register_keras_serializable(package="keras_svre")
class SVRE(Extragradient):
    """Stochastic variance-reduced extragradient (SVRE, Algorithm 1 of the paper).

    SVRE is extragradient on the SVRG-style variance-reduced estimate of the
    game's vector field. With a snapshot `w_S` and its full-data mean field
    `mu_S`, the direction for a minibatch i is

        d_i(w) = F_i(w) - F_i(w_S) + mu_S

    (unbiased, with variance vanishing as `w` approaches `w_S`), and one
    iteration is

        w_half = w - lr * step(d_i(w))         # extrapolation, minibatch i
        w      = w - lr * step(d_j(w_half))    # update, minibatch j

    After each iteration a new snapshot is taken with probability
    `restart_probability` (default `1/n`, n = minibatches per pass). When a
    snapshot is taken, with probability `average_restart_probability` the
    iterate first restarts from the uniform average of the iterates since the
    last restart (the paper's bilinear runs use 0.1).

    The optimizer holds, per model variable, the slots `snapshot` (w_S) and
    `mean_gradient` (mu_S), plus `average` when restarts from the average are
    on and Adam's `momentum`/`velocity` for adaptive steps; they are saved in
    `.keras` files and checkpoints like any optimizer state. The gradients
    come from a `keras_svre.Game` train step, which evaluates F on the same
    minibatch at the current point and at the snapshot and runs the snapshot
    pass; in a plain `Model.fit` the optimizer raises an error that says so.

    Args:
        learning_rate: A float, a
            `keras.optimizers.schedules.LearningRateSchedule` instance, or a
            callable with no arguments. The step size. Defaults to `0.01`.
        restart_probability: Probability of a new snapshot after each
            iteration, in (0, 1]. `None` means `1/n` with n the number of
            minibatches per pass over the training data. Defaults to `None`.
        average_restart_probability: Probability, at each snapshot, of
            restarting from the uniform average of the iterates, in [0, 1].
            Defaults to `0.0` (never).
        adaptive: `None` (plain SVRE steps), `"adam"` (the variance-reduced
            direction fed to Adam: SVRE-VRAd as the authors' GAN code runs it,
            method name `"svre-vrad"`) or `"vrad"` (SVRE-VRAd as the authors'
            bilinear notebook writes it, `d * |m_hat| / (sqrt(v_hat) + eps)`).
            Defaults to `None`.
        beta_1: Adam's first-moment decay, for adaptive steps. Defaults to
            `0.9`.
        beta_2: Adam's second-moment decay, for adaptive steps. Defaults to
            `0.999`.
        epsilon: Adam's epsilon, for adaptive steps. Defaults to `1e-8`.
        **kwargs: Keras' common optimizer arguments, passed to Keras untouched.

    References:
        - [Chavdarova et al., 2019](https://arxiv.org/abs/1904.08598):
          Reducing Noise in GAN Training with Variance Reduced Extragradient.
        - [Johnson & Zhang, 2013](https://papers.nips.cc/paper/4937): SVRG.
    """

    variance_reduced = True

    def __init__(
        self,
        learning_rate=0.01,
        restart_probability=None,
        average_restart_probability=0.0,
        adaptive=None,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        **kwargs,
    ):
        if restart_probability is not None:
            _check_probability("restart_probability", restart_probability, False)
        _check_probability(
            "average_restart_probability", average_restart_probability, True
        )
        super().__init__(
            learning_rate=learning_rate,
            adaptive=adaptive,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            **kwargs,
        )
        self.restart_probability = restart_probability
        self.average_restart_probability = average_restart_probability

    def build(self, var_list):
        """Creates the slots `snapshot`, `mean_gradient` (and `average`).

        Args:
            var_list: The game's trainable variables this optimizer updates.
        """
        if self.built:
            return
        super().build(var_list)
        self._snapshots, self._mean_gradients = self.add_optimizer_variables(
            var_list, ["snapshot", "mean_gradient"]
        )
        self.snapshots_taken = self.add_variable(
            shape=(),
            # int64 on TensorFlow, int32 on JAX (no x64): Keras' "int".
            dtype="int",
            initializer="zeros",
            name="snapshots_taken",
            aggregation="only_first_replica",
        )
        if self.average_restart_probability > 0:
            self._averages = self.add_optimizer_variables(var_list, "iterate_average")
            # The iteration at which the current uniform average started: the
            # count follows `iterations`, which only advances on real steps
            # (also with gradient accumulation).
            self.average_start = self.add_variable(
                shape=(),
                dtype="int",
                initializer="zeros",
                name="average_start",
                aggregation="only_first_replica",
            )

    @property
    def keeps_average(self):
        """Whether the uniform average of the iterates is kept (for restarts)."""
        return self.average_restart_probability > 0

    def _slot(self, slots, variable):
        return slots[self._get_variable_index(variable)]

    def snapshot_values(self, variables):
        """The snapshot point `w_S` for `variables`, as tensors."""
        return [self._slot(self._snapshots, v).value for v in variables]

    @property
    def average_size(self):
        """How many iterates the current uniform average holds (a tensor)."""
        self._check_keeps_average()
        return self.iterations - self.average_start + 1

    def _check_keeps_average(self):
        if not self.keeps_average:
            raise ValueError(
                "This SVRE optimizer keeps no average of the iterates: "
                "construct it with `average_restart_probability > 0`."
            )

    def average_values(self, variables):
        """The uniform average of the iterates for `variables`, as tensors."""
        self._check_keeps_average()
        return [self._slot(self._averages, v).value for v in variables]

    def variance_reduced_gradient(self, gradients, snapshot_gradients, variables):
        """The variance-reduced direction `g - g_snapshot + mu` per variable.

        Args:
            gradients: Minibatch gradients at the point being evaluated.
            snapshot_gradients: Gradients on the same minibatch at the snapshot.
            variables: The variables the gradients belong to.

        Returns:
            A list of tensors, one per variable.
        """
        return [
            ops.cast(g, v.dtype)
            - ops.cast(g_s, v.dtype)
            + self._slot(self._mean_gradients, v).value
            for g, g_s, v in zip(gradients, snapshot_gradients, variables)
        ]

    def take_snapshot(self, variables, mean_gradients):
        """Makes the current `variables` the snapshot, with their mean gradient.

        Args:
            variables: The variables; their values become `w_S`.
            mean_gradients: The full-data mean of the game's field at those
                values (`mu_S`; the game's snapshot pass computes it), one per
                variable.
        """
        self._check_variables_are_known(variables)
        for v, g in zip(variables, mean_gradients, strict=True):
            self.assign(self._slot(self._snapshots, v), v)
            self.assign(self._slot(self._mean_gradients, v), g)
        self.assign_add(self.snapshots_taken, 1)

    def reset_average(self, variables):
        """Restarts the uniform average of the iterates at `variables`."""
        self._check_keeps_average()
        for v in variables:
            self.assign(self._slot(self._averages, v), v)
        self.assign(self.average_start, self.iterations)

    def restart_from_average(self, variables):
        """Sets `variables` to their uniform average and restarts the average."""
        self._check_keeps_average()
        for v in variables:
            self.assign(v, self._slot(self._averages, v))
        self.assign(self.average_start, self.iterations)

    def update_step(self, gradient, variable, learning_rate):
        """The SVRE update; also folds the new iterate into the uniform average."""
        super().update_step(gradient, variable, learning_rate)
        if self.keeps_average:
            average = self._slot(self._averages, variable)
            # Iterates in the average, the new one included (`iterations` is
            # incremented after the update steps).
            count = ops.cast(self.iterations - self.average_start + 2, variable.dtype)
            self.assign_add(average, (variable - average) / count)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "restart_probability": self.restart_probability,
                "average_restart_probability": self.average_restart_probability,
            }
        )
        return config
