"""Generator and discriminator networks of the SVRE paper's experiments.

Every builder returns a built functional `keras.Model` (variables exist at
once, `stateless_call` works, `.keras` files round-trip). Generators map
`[B, latent_dim]` to NHWC images in `[-1, 1]`; discriminators map NHWC images
to raw logits `[B, 1]`.

| name          | images    | networks                                      |
| ------------- | --------- | --------------------------------------------- |
| `mnist_dcgan` | 28x28x1   | `mnist_generator`, `mnist_discriminator`      |
| `dcgan32`     | 32x32x3   | `dcgan32_generator`, `dcgan32_discriminator`  |
| `dcgan32_sa`  | 32x32x3   | the same with `self_attention=True`           |
| `resnet32`    | 32x32x3   | `resnet32_generator`, `resnet32_discriminator`|
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import keras

from keras_svre.models.dcgan import mnist_discriminator, mnist_generator
from keras_svre.models.layers import GlobalSumPooling2D, SpectralNorm
from keras_svre.models.resnet import resnet32_discriminator, resnet32_generator
from keras_svre.models.sagan import (
    SelfAttention,
    dcgan32_discriminator,
    dcgan32_generator,
)

__all__ = [
    "GlobalSumPooling2D",
    "SelfAttention",
    "SpectralNorm",
    "dcgan32_discriminator",
    "dcgan32_generator",
    "get",
    "get_networks",
    "image_shape",
    "mnist_discriminator",
    "mnist_generator",
    "names",
    "resnet32_discriminator",
    "resnet32_generator",
]

Builder = Callable[..., keras.Model]

_ARCHITECTURES: dict[str, tuple[Builder, Builder]] = {
    "mnist_dcgan": (mnist_generator, mnist_discriminator),
    "dcgan32": (dcgan32_generator, dcgan32_discriminator),
    "dcgan32_sa": (
        functools.partial(dcgan32_generator, self_attention=True),
        functools.partial(dcgan32_discriminator, self_attention=True),
    ),
    "resnet32": (resnet32_generator, resnet32_discriminator),
}
_IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist_dcgan": (28, 28, 1),
    "dcgan32": (32, 32, 3),
    "dcgan32_sa": (32, 32, 3),
    "resnet32": (32, 32, 3),
}


def names() -> list[str]:
    """Returns the registered architecture names, sorted."""
    return sorted(_ARCHITECTURES)


def get(name: str) -> tuple[Builder, Builder]:
    """Looks up the builders of a registered architecture.

    Args:
        name: One of `names()`.

    Returns:
        The pair `(generator_fn, discriminator_fn)`.

    Raises:
        ValueError: if `name` is not registered; the message lists the names.
    """
    if name not in _ARCHITECTURES:
        raise ValueError(
            f"Unknown architecture. Expected one of {names()}. Received: name={name!r}"
        )
    return _ARCHITECTURES[name]


def image_shape(name: str) -> tuple[int, int, int]:
    """Returns the `(H, W, C)` of the images an architecture makes and takes.

    Args:
        name: One of `names()`.

    Raises:
        ValueError: if `name` is not registered.
    """
    get(name)
    return _IMAGE_SHAPES[name]


def _accepts(builder: Builder, argument: str) -> bool:
    return argument in inspect.signature(builder).parameters


def get_networks(
    name: str, latent_dim: int = 128, **kwargs: Any
) -> tuple[keras.Model, keras.Model]:
    """Builds the generator and discriminator of a registered architecture.

    Each keyword argument goes to every builder whose signature has it, so
    `width=8` shrinks both networks while `spectral_norm=True` reaches
    whichever builder takes it.

    Args:
        name: One of `names()`.
        latent_dim: Size of the generator's latent input. Defaults to `128`.
        **kwargs: Builder arguments (`width`, `batch_norm`, `spectral_norm`,
            ...).

    Returns:
        The pair `(generator, discriminator)` of built functional models.

    Raises:
        ValueError: if `name` is not registered, or if some argument is
            accepted by neither builder.
    """
    generator_fn, discriminator_fn = get(name)
    unused = [
        key
        for key in kwargs
        if not (_accepts(generator_fn, key) or _accepts(discriminator_fn, key))
    ]
    if unused:
        raise ValueError(
            f"Architecture {name!r} takes no argument(s) {unused}. Received: {kwargs}"
        )

    def arguments_for(builder: Builder) -> dict[str, Any]:
        return {key: value for key, value in kwargs.items() if _accepts(builder, key)}

    generator = generator_fn(latent_dim=latent_dim, **arguments_for(generator_fn))
    discriminator = discriminator_fn(**arguments_for(discriminator_fn))
    return generator, discriminator
