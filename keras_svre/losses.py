"""GAN losses (non-saturating, hinge, Wasserstein) and gradient penalties.

A GAN loss is a pair of functions of the discriminator's logits:
`discriminator_loss(real_logits, fake_logits)` and
`generator_loss(fake_logits)`, each returning the minibatch mean.

A gradient penalty (WGAN-GP, R1) is a regulariser of the discriminator that
depends on its gradient with respect to its input images; `keras_svre.GAN`
adds it to the discriminator's loss (`gradient_penalty=`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import keras
from keras import ops


def batch_mean(x):
    """The mean of all of `x`'s entries, in `x`'s dtype.

    Not `ops.mean`: on JAX, Keras computes it in float32 even for float64
    inputs (its type promotion maps 64-bit types to 32-bit off TensorFlow),
    which the float64 step-equivalence tests would see.
    """
    x = ops.reshape(x, (-1,))
    return ops.sum(x) / ops.cast(ops.shape(x)[0], x.dtype)


_mean = batch_mean


def non_saturating_discriminator_loss(real_logits, fake_logits):
    """`-log D(x) - log(1 - D(G(z)))` with `D = sigmoid(logits)`."""
    return _mean(ops.softplus(-real_logits)) + _mean(ops.softplus(fake_logits))


def non_saturating_generator_loss(fake_logits):
    """`-log D(G(z))`: the generator's non-saturating loss (Goodfellow et al.)."""
    return _mean(ops.softplus(-fake_logits))


def hinge_discriminator_loss(real_logits, fake_logits):
    """`relu(1 - D(x)) + relu(1 + D(G(z)))` (SAGAN / SNGAN)."""
    return _mean(ops.relu(1.0 - real_logits)) + _mean(ops.relu(1.0 + fake_logits))


def hinge_generator_loss(fake_logits):
    """`-D(G(z))`."""
    return -_mean(fake_logits)


def wasserstein_discriminator_loss(real_logits, fake_logits):
    """`D(G(z)) - D(x)` (the critic's loss; add a Lipschitz constraint yourself)."""
    return _mean(fake_logits) - _mean(real_logits)


def wasserstein_generator_loss(fake_logits):
    """`-D(G(z))`."""
    return -_mean(fake_logits)


@dataclasses.dataclass(frozen=True)
class GANLoss:
    """A named pair of GAN loss functions.

    Args:
        name: The loss's name (used in configs).
        discriminator_loss: `(real_logits, fake_logits) -> scalar`.
        generator_loss: `fake_logits -> scalar`.
    """

    name: str
    discriminator_loss: Callable
    generator_loss: Callable


LOSSES = {
    "non_saturating": GANLoss(
        "non_saturating",
        non_saturating_discriminator_loss,
        non_saturating_generator_loss,
    ),
    "hinge": GANLoss("hinge", hinge_discriminator_loss, hinge_generator_loss),
    "wasserstein": GANLoss(
        "wasserstein", wasserstein_discriminator_loss, wasserstein_generator_loss
    ),
}


def get(loss) -> GANLoss:
    """A `GANLoss` from a name, a `GANLoss`, or a pair of callables.

    Args:
        loss: `"non_saturating"`, `"hinge"`, `"wasserstein"`, a `GANLoss`, or a
            tuple `(discriminator_loss, generator_loss)`.

    Raises:
        ValueError: for an unknown name or an unusable value.
    """
    if isinstance(loss, GANLoss):
        return loss
    if isinstance(loss, str):
        key = loss.lower().replace("-", "_")
        if key not in LOSSES:
            raise ValueError(
                f"Unknown GAN loss {loss!r}. Choose one of {sorted(LOSSES)}, or pass "
                "a pair of callables (discriminator_loss, generator_loss)."
            )
        return LOSSES[key]
    if (
        isinstance(loss, (tuple, list))
        and len(loss) == 2
        and all(callable(f) for f in loss)
    ):
        d, g = loss
        return GANLoss(f"custom({d.__name__},{g.__name__})", d, g)
    raise ValueError(
        "`loss` must be a name, a `keras_svre.losses.GANLoss` or a pair of callables "
        f"(discriminator_loss, generator_loss). Received: {loss!r}."
    )


# --------------------------------------------------------------------------- #
# Gradient penalties.
# --------------------------------------------------------------------------- #
GRADIENT_PENALTIES = ("wgan-gp", "r1")


def check_gradient_penalty(gradient_penalty, weight):
    """The penalty's canonical name (or `None`), after checking both arguments.

    Raises:
        ValueError: for an unknown penalty or a weight that is not a positive
            finite number.
    """
    if gradient_penalty is not None:
        key = str(gradient_penalty).lower().replace("_", "-")
        if not isinstance(gradient_penalty, str) or key not in GRADIENT_PENALTIES:
            raise ValueError(
                "Argument `gradient_penalty` must be None, 'wgan-gp' or 'r1'. "
                f"Received: gradient_penalty={gradient_penalty!r}."
            )
        gradient_penalty = key
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or not (weight > 0 and math.isfinite(weight))
    ):
        raise ValueError(
            "Argument `gradient_penalty_weight` must be a positive number. "
            f"Received: gradient_penalty_weight={weight!r}."
        )
    return gradient_penalty


def input_gradients(critic, images):
    """`grad_x critic(x)` for each example of a minibatch.

    The gradient of the summed logits: each example's gradient is its own
    logit's, as long as the critic treats the examples independently (no
    batch normalisation in training mode). Differentiable again (the outer
    gradient of a penalty goes through it): a `tf.GradientTape` on
    TensorFlow, `jax.grad` on JAX.

    Args:
        critic: A callable `images -> logits [B, 1]`, pure in the images (it
            writes no variable: `GAN` passes a stateless call).
        images: A minibatch `[B, ...]`.

    Returns:
        `(gradients, logits)`: the gradients, of the images' shape and dtype.
    """
    images = ops.convert_to_tensor(images)
    if keras.backend.backend() == "jax":
        import jax

        def total(x):
            logits = critic(x)
            return ops.sum(ops.cast(logits, x.dtype)), logits

        return jax.grad(total, has_aux=True)(images)
    import tensorflow as tf

    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(images)
        logits = critic(images)
        total = ops.sum(ops.cast(logits, images.dtype))
    return tape.gradient(total, images), logits


def _squared_norms(gradients):
    """`||g_k||^2` per example, in float32 at least."""
    if keras.backend.standardize_dtype(gradients.dtype) in ("float16", "bfloat16"):
        gradients = ops.cast(gradients, "float32")
    # The images' shape is static but for the batch axis.
    flat = ops.reshape(gradients, (-1, math.prod(gradients.shape[1:])))
    return ops.sum(ops.square(flat), axis=1)


def wgan_gp_penalty(critic, real, fake, interpolation):
    """`mean_k (||grad_x D(x_hat_k)|| - 1)^2` (WGAN-GP, unweighted).

    At `x_hat_k = u_k * x_k + (1 - u_k) * G(z_k)`, a random point on the
    segment between a real and a generated image.

    Args:
        critic: A callable `images -> logits`.
        real: Real images `[B, ...]`.
        fake: Generated images `[B, ...]` (cast to the real images' dtype).
        interpolation: The coefficients `u_k` in [0, 1], shape `[B]`.

    Returns:
        A scalar (float32, or float64 for float64 images).

    References:
        - [Gulrajani et al., 2017](https://arxiv.org/abs/1704.00028):
          Improved Training of Wasserstein GANs (Algorithm 1).
    """
    real = ops.convert_to_tensor(real)
    fake = ops.cast(fake, real.dtype)
    shape = (-1,) + (1,) * (len(real.shape) - 1)
    u = ops.reshape(ops.cast(interpolation, real.dtype), shape)
    x_hat = fake + u * (real - fake)
    gradients, _ = input_gradients(critic, x_hat)
    # sqrt has an infinite derivative at 0; the tiny shift keeps the
    # penalty's gradient finite there (a critic with a zero input gradient).
    squared = _squared_norms(gradients)
    norms = ops.sqrt(squared + ops.cast(1e-12, squared.dtype))
    return batch_mean(ops.square(norms - 1.0))


def r1_penalty(critic, real):
    """`mean_k ||grad_x D(x_k)||^2 / 2` on real images (R1, unweighted).

    Args:
        critic: A callable `images -> logits`.
        real: Real images `[B, ...]`.

    Returns:
        A scalar (float32, or float64 for float64 images).

    References:
        - [Mescheder et al., 2018](https://arxiv.org/abs/1801.04406): Which
          Training Methods for GANs do actually Converge? (Eq. 9: gamma/2
          times the squared norm).
    """
    gradients, _ = input_gradients(critic, real)
    return 0.5 * batch_mean(_squared_norms(gradients))
