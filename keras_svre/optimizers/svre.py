"""Stochastic variance-reduced extragradient (SVRE)."""

import math
import numbers

import keras
import numpy as np
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


OPTIMAL = "optimal"


def _check_vr_coefficient(value):
    """`vr_coefficient` as stored: a float, a schedule or `"optimal"`."""
    if isinstance(value, keras.optimizers.schedules.LearningRateSchedule):
        initial = float(ops.convert_to_numpy(value(0)))
        if not (math.isfinite(initial) and initial >= 0.0):
            raise ValueError(
                "A `vr_coefficient` schedule must start at a finite number >= 0. "
                f"Received: a {type(value).__name__} whose value at step 0 is "
                f"{initial}."
            )
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if not (math.isfinite(value) and value >= 0.0):
            raise ValueError(
                "Argument `vr_coefficient` must be a finite number >= 0. "
                f"Received: vr_coefficient={value}."
            )
        return float(value)
    if not (isinstance(value, str) and value == OPTIMAL):
        raise ValueError(
            "Argument `vr_coefficient` must be a number >= 0, a "
            f"`LearningRateSchedule` or {OPTIMAL!r}. "
            f"Received: vr_coefficient={value!r}."
        )
    return value


def _check_statistics_settings(decay, reset, maximum):
    if isinstance(decay, bool) or not (
        isinstance(decay, numbers.Real) and 0.0 <= decay < 1.0
    ):
        raise ValueError(
            "Argument `vr_statistics_decay` must be in the [0, 1) range. "
            f"Received: vr_statistics_decay={decay!r}."
        )
    if not isinstance(reset, bool):
        raise ValueError(
            "Argument `vr_statistics_reset` must be True or False. "
            f"Received: vr_statistics_reset={reset!r}."
        )
    if isinstance(maximum, bool) or not (
        isinstance(maximum, numbers.Real) and 0.0 < maximum < math.inf
    ):
        raise ValueError(
            "Argument `vr_coefficient_max` must be a finite number > 0. "
            f"Received: vr_coefficient_max={maximum!r}."
        )


def _check_restart_correlation(value, restart_probability, reset):
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Real) and 0.0 < value < 1.0
    ):
        raise ValueError(
            "Argument `restart_correlation` must be in the (0, 1) range. "
            f"Received: restart_correlation={value!r}."
        )
    if restart_probability is not None:
        raise ValueError(
            "Pass either `restart_probability` (Bernoulli snapshots) or "
            "`restart_correlation` (snapshots when the correlation is low), "
            f"not both. Received: restart_probability={restart_probability}, "
            f"restart_correlation={value}."
        )
    if not reset:
        raise ValueError(
            "Argument `restart_correlation` needs `vr_statistics_reset=True`: "
            "statistics kept across a snapshot would call for the next one at "
            "once. Received: vr_statistics_reset=False."
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
    `restart_probability` (default `1/n`, n = minibatches per pass), or, with
    `restart_correlation`, when the estimated correlation between `F_i(w)`
    and `F_i(w_S)` has fallen below it (see below). When a
    snapshot is taken, with probability `average_restart_probability` the
    iterate first restarts from the uniform average of the iterates since the
    last restart (the paper's bilinear runs use 0.1).

    A coefficient on the correction (alpha-SVRE; Yin et al.'s alpha-SVRG
    carried to games) turns the direction into

        d_i(w) = F_i(w) - alpha * (F_i(w_S) - mu_S)

    which is unbiased for any alpha. Its variance is smallest at
    `alpha* = Cov(F_i(w), F_i(w_S)) / Var(F_i(w_S))`, where it is at most the
    plain estimate's, `Var[F_i(w)] (1 - rho^2)`; `alpha = 1` (the default) is
    SVRE, which adds variance once `w` has moved far enough from `w_S` that
    the correlation `rho` falls below 1/2. `vr_coefficient="optimal"`
    estimates `alpha*` per variable tensor as `clip(C / V, 0,
    vr_coefficient_max)`, with C and V running averages (decay
    `vr_statistics_decay`) of `<F_i(w) - mu_S, F_i(w_S) - mu_S>` and
    `||F_i(w_S) - mu_S||^2` over the paired evaluations of the iterations
    applied so far (`record_correction`, which the game calls): both pairs
    of an iteration, the extrapolation's and the update's, averaged into one
    sample (with `compile(one_minibatch=True)` the two pairs share `F_i(w_S)`
    and are averaged all the same). An iteration's alpha is read before its
    own pairs are recorded, so it does not depend on the minibatches it
    corrects, and both of its directions use the same alpha. C is centred
    on mu_S: `E[F_i(w_S)] = mu_S`, so centring F_i(w) does not change what C
    estimates (the covariance), but it removes the noise term
    `<mu_S, F_i(w_S) - mu_S>` from each sample. At each snapshot C restarts
    at V (`vr_statistics_reset=True`): at `w = w_S` the pairs are equal and
    alpha* is 1, so alpha restarts at 1 with the weight of the whole
    average, and the new pairs move it at the rate `1 - decay`. While V is 0
    (before the first applied iteration) alpha is `min(1,
    vr_coefficient_max)`: plain SVRE. The averages start at 0 with the same
    decay, so `C / V` needs no bias correction.

    Snapshots when they are needed (`restart_correlation=r`, instead of the
    Bernoulli draws): the statistics are kept (whatever `vr_coefficient` is),
    plus U, a running average of `||F_i(w) - mu_S||^2` over the same pairs.
    Since `E||F_i(w) - mu_S||^2 = Var[F_i(w)] + ||F(w) - mu_S||^2`, U
    overestimates `Var[F_i(w)]` by the squared drift of the mean field since
    the snapshot (0 at the snapshot), which errs towards an earlier snapshot.
    After each iteration the game's correlation is estimated, pooled over
    every variable tensor k of the game's SVRE optimizers that set
    `restart_correlation` (the largest threshold applies), as

        rho = sqrt(sum_k max(C_k, 0)^2 / V_k  /  sum_k U_k)

    (the square root of the share of the plain estimate's variance that the
    per-tensor optimal alpha removes), and a snapshot is taken when
    `rho < r` (`keras_svre.game.snapshots.correlation_restart`). At each
    snapshot U and C restart at V, so rho restarts at 1
    (`vr_statistics_reset` must be True), and rho is not estimated before
    an iteration has been recorded.
    The decision reads only saved slots, so a resumed run takes the
    snapshots an uninterrupted one would.

    The optimizer holds, per model variable, the slots `snapshot` (w_S) and
    `mean_gradient` (mu_S), plus `average` when restarts from the average are
    on, Adam's `momentum`/`velocity` for adaptive steps, and the scalars
    `correction_covariance` (C) and `correction_variance` (V) with
    `vr_coefficient="optimal"` or `restart_correlation` (and `field_variance`,
    U, with the latter); they are saved in `.keras` files and
    checkpoints like any optimizer state. The gradients
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
        vr_coefficient: The coefficient alpha on the correction
            `F_i(w_S) - mu_S`: a finite float >= 0 (`1.0`: SVRE, `0.0`: the
            plain stochastic field), a
            `keras.optimizers.schedules.LearningRateSchedule` evaluated at the
            optimizer's `iterations` (e.g. alpha-SVRG's linear decay,
            `keras.optimizers.schedules.PolynomialDecay(1.0, steps, 0.0)`;
            its values are used as they come) or `"optimal"` (estimated per
            variable tensor, see above). Defaults to `1.0`.
        vr_statistics_decay: `"optimal"` and `restart_correlation` only: the
            decay of the running averages C and V (and U), in [0, 1) (about
            `1 / (1 - decay)` iterations of memory). Defaults to `0.9`: the
            project's variance study (README, "A coefficient on the
            correction") saw SVRE's correction help for about 10 to 50
            iterations after a snapshot.
        vr_statistics_reset: `"optimal"` and `restart_correlation` only:
            whether C (and U) restart at V at each snapshot, which sets
            alpha (and rho) back to 1, the exact value at `w = w_S`.
            Defaults to `True`: in the variance study this matched SVRE at
            one iteration after the snapshot, where restarting the averages
            from 0 (one noisy pair decides alpha) or keeping them (alpha
            starts from the last snapshot's low value) did worse.
        vr_coefficient_max: `"optimal"` only: the largest alpha, > 0.
            Defaults to `1.0` (provisional until measured; above 1 the
            correction overshoots SVRE's).
        restart_correlation: `None` (Bernoulli draws, see
            `restart_probability`), or a number in (0, 1): take a new
            snapshot after an iteration when the estimated correlation
            (see above) is below it; `restart_probability` must then be
            `None`. Defaults to `None`.
        **kwargs: Keras' common optimizer arguments, passed to Keras untouched.

    References:
        - [Chavdarova et al., 2019](https://arxiv.org/abs/1904.08598):
          Reducing Noise in GAN Training with Variance Reduced Extragradient.
        - [Johnson & Zhang, 2013](https://papers.nips.cc/paper/4937): SVRG.
        - [Yin et al., 2025](https://arxiv.org/abs/2311.05589): A Coefficient
          Makes SVRG Effective (alpha-SVRG).
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
        vr_coefficient=1.0,
        vr_statistics_decay=0.9,
        vr_statistics_reset=True,
        vr_coefficient_max=1.0,
        restart_correlation=None,
        **kwargs,
    ):
        if restart_probability is not None:
            _check_probability("restart_probability", restart_probability, False)
        _check_probability(
            "average_restart_probability", average_restart_probability, True
        )
        vr_coefficient = _check_vr_coefficient(vr_coefficient)
        _check_statistics_settings(
            vr_statistics_decay, vr_statistics_reset, vr_coefficient_max
        )
        if restart_correlation is not None:
            _check_restart_correlation(
                restart_correlation, restart_probability, vr_statistics_reset
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
        self.vr_coefficient = vr_coefficient
        self.vr_statistics_decay = float(vr_statistics_decay)
        self.vr_statistics_reset = vr_statistics_reset
        self.vr_coefficient_max = float(vr_coefficient_max)
        self.restart_correlation = (
            None if restart_correlation is None else float(restart_correlation)
        )

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
        if self.keeps_statistics:
            self._covariances = self._add_scalar_slots(
                var_list, "correction_covariance"
            )
            self._variances = self._add_scalar_slots(var_list, "correction_variance")
        if self.restart_correlation is not None:
            self._field_variances = self._add_scalar_slots(var_list, "field_variance")
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

    def _add_scalar_slots(self, var_list, name):
        """One scalar per variable, named as Keras names per-variable slots."""
        slots = []
        for variable in var_list:
            if self._overwrite_variable_with_gradient(variable):
                slots.append(None)
                continue
            slots.append(
                self.add_variable(
                    shape=(),
                    dtype=variable.dtype,
                    initializer="zeros",
                    name=f"{variable.path.replace('/', '_')}_{name}",
                    # The game computes them from the global batch, the same
                    # on every replica: written in the replicas' step.
                    aggregation="only_first_replica",
                )
            )
        return slots

    @property
    def estimates_coefficient(self):
        """Whether alpha is estimated from running averages (`"optimal"`)."""
        return isinstance(self.vr_coefficient, str)

    @property
    def keeps_statistics(self):
        """Whether the running averages C and V are kept (`"optimal"` alpha,
        or snapshots by correlation)."""
        return self.estimates_coefficient or self.restart_correlation is not None

    def correction_statistics(self):
        """The running averages per variable, as NumPy arrays (host side).

        Returns:
            `None` when none are kept; else a dict with `"covariance"` (C),
            `"variance"` (V) and, with `restart_correlation`,
            `"field_variance"` (U), each one value per variable the optimizer
            was built with (skipping those without slots).
        """
        if not self.keeps_statistics:
            return None
        kinds = {"covariance": self._covariances, "variance": self._variances}
        if self.restart_correlation is not None:
            kinds["field_variance"] = self._field_variances
        return {
            kind: np.array(
                [float(ops.convert_to_numpy(s)) for s in slots if s is not None]
            )
            for kind, slots in kinds.items()
        }

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
        if self._is_plain_svre():
            return [
                ops.cast(g, v.dtype)
                - ops.cast(g_s, v.dtype)
                + self._slot(self._mean_gradients, v).value
                for g, g_s, v in zip(gradients, snapshot_gradients, variables)
            ]
        return [
            ops.cast(g, v.dtype)
            - alpha
            * (ops.cast(g_s, v.dtype) - self._slot(self._mean_gradients, v).value)
            for g, g_s, v, alpha in zip(
                gradients,
                snapshot_gradients,
                variables,
                self.vr_coefficients(variables),
            )
        ]

    def _is_plain_svre(self):
        # A plain 1.0 keeps SVRE's own arithmetic, bit for bit: 1.0 * (a - b)
        # + c rounds differently from a - b + c.
        return not self.estimates_coefficient and self.vr_coefficient == 1.0

    def vr_coefficients(self, variables):
        """The coefficient alpha on each variable's correction, for this iteration.

        Args:
            variables: The variables (the optimizer must have been built with
                them).

        Returns:
            A list of scalar tensors, one per variable, in its dtype.
        """
        alphas = []
        for variable in variables:
            dtype = variable.dtype
            if self.estimates_coefficient:
                covariance = self._slot(self._covariances, variable).value
                variance = self._slot(self._variances, variable).value
                known = variance > 0
                ratio = covariance / ops.where(known, variance, ops.ones_like(variance))
                fallback = min(1.0, self.vr_coefficient_max)
                alpha = ops.where(
                    known,
                    ops.clip(ratio, 0.0, self.vr_coefficient_max),
                    ops.convert_to_tensor(fallback, dtype=dtype),
                )
            elif isinstance(
                self.vr_coefficient, keras.optimizers.schedules.LearningRateSchedule
            ):
                alpha = ops.cast(self.vr_coefficient(self.iterations), dtype)
            else:
                # Not `cast`: that would round the Python float through float32.
                alpha = ops.convert_to_tensor(self.vr_coefficient, dtype=dtype)
            alphas.append(alpha)
        return alphas

    def record_correction(self, pairs, variables):
        """Folds an applied iteration's paired evaluations into C and V.

        For `vr_coefficient="optimal"`: each pair `(F(w), F(w_S))` on one
        minibatch gives, per variable, `<F(w), F(w_S) - mu_S>` and
        `||F(w_S) - mu_S||^2`; the pairs' means enter the running averages
        C and V once per iteration. Other coefficients keep no statistics
        (nothing is computed). The game calls this only when it applies the
        iteration, after its directions are computed.

        Args:
            pairs: The iteration's `(gradients, snapshot_gradients)` pairs,
                each a list aligned with `variables` (the extrapolation's,
                then the update's).
            variables: The variables the gradients belong to.
        """
        if not self.keeps_statistics or not pairs:
            return
        self._check_variables_are_known(variables)
        field_variances = self.restart_correlation is not None
        for index, variable in enumerate(variables):
            dtype = variable.dtype
            mean = self._slot(self._mean_gradients, variable).value
            covariance, variance, field_variance = 0.0, 0.0, 0.0
            for gradients, snapshot_gradients in pairs:
                centred = ops.cast(gradients[index], dtype) - mean
                correction = ops.cast(snapshot_gradients[index], dtype) - mean
                covariance += ops.sum(centred * correction)
                variance += ops.sum(ops.square(correction))
                if field_variances:
                    field_variance += ops.sum(ops.square(centred))
            self._fold_in(self._covariances, variable, covariance / len(pairs))
            self._fold_in(self._variances, variable, variance / len(pairs))
            if field_variances:
                self._fold_in(
                    self._field_variances, variable, field_variance / len(pairs)
                )

    def _statistics_slots(self):
        slots = [self._covariances, self._variances]
        if self.restart_correlation is not None:
            slots.append(self._field_variances)
        return slots

    def _fold_in(self, slots, variable, sample):
        average = self._slot(slots, variable)
        decay = ops.convert_to_tensor(self.vr_statistics_decay, dtype=variable.dtype)
        self.assign(average, decay * average.value + (1.0 - decay) * sample)

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
            if self.keeps_statistics and self.vr_statistics_reset:
                # At w = w_S the pairs are equal: C = U = V, alpha = 1, rho = 1.
                variance = self._slot(self._variances, v).value
                for slots in self._statistics_slots():
                    if slots is not self._variances:
                        self.assign(self._slot(slots, v), variance)
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
                "vr_coefficient": (
                    keras.optimizers.schedules.serialize(self.vr_coefficient)
                    if isinstance(
                        self.vr_coefficient,
                        keras.optimizers.schedules.LearningRateSchedule,
                    )
                    else self.vr_coefficient
                ),
                "vr_statistics_decay": self.vr_statistics_decay,
                "vr_statistics_reset": self.vr_statistics_reset,
                "vr_coefficient_max": self.vr_coefficient_max,
                "restart_correlation": self.restart_correlation,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # A schedule comes back from its config, as Keras does for the
        # learning rate.
        if isinstance(config.get("vr_coefficient"), dict):
            config["vr_coefficient"] = keras.optimizers.schedules.deserialize(
                config["vr_coefficient"], custom_objects=custom_objects
            )
        return super().from_config(config, custom_objects=custom_objects)
