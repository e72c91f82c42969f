"""GAN losses: non-saturating, hinge and Wasserstein.

A GAN loss is a pair of functions of the discriminator's logits:
`discriminator_loss(real_logits, fake_logits)` and
`generator_loss(fake_logits)`, each returning the minibatch mean.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

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
