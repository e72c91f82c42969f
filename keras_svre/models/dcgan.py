"""DCGAN networks of the SVRE paper's MNIST experiments (28x28x1 images).

Layer for layer these follow `GeneratorCNN28` and `DiscriminatorCNN28` of the
reference code (Chavdarova/SVRE, `mnist/models/dcgan28.py`), an adjusted
PyTorch DCGAN with `h_filters=64` and a 128-dimensional latent:

    generator      z -> 3x3x512 -> 6x6x256 -> 14x14x128 -> 28x28x1, tanh
    discriminator  28x28x1 -> 14x14x64 -> 7x7x128 -> 3x3x256 -> 1x1x1

Deviations: the discriminator returns logits (the reference ends in a
sigmoid and uses `BCELoss`); `width` replaces `h_filters` (the reference
hard-codes 64 in the generator's batch norms); `batch_norm=False` is an
option the reference lacks. Layout is NHWC.
"""

from __future__ import annotations

import keras

from keras_svre.models.layers import (
    check_positive,
    maybe_spectral_norm,
    pytorch_batch_norm,
    pytorch_default_initializer,
)

IMAGE_SHAPE = (28, 28, 1)


def mnist_generator(
    latent_dim: int = 128,
    batch_norm: bool = True,
    name: str = "generator",
    width: int = 64,
) -> keras.Model:
    """Builds the MNIST DCGAN generator: `[B, latent_dim]` -> `[B, 28, 28, 1]`.

    Four transposed convolutions (3x3 valid, then 4x4 stride 2 with
    padding "same", "valid", "same") with `8, 4, 2` times `width` channels,
    batch norm and ReLU between them, and a tanh output in `[-1, 1]`.
    With batch norm no convolution has a bias (the reference); without it,
    every convolution has one.

    Note that in training mode batch norm normalises with the statistics of
    the current batch, which makes a sample's output depend on the rest of
    its batch; SVRE's finite-sum assumption holds only with fixed batches
    (or `batch_norm=False`).

    Args:
        latent_dim: Size of the latent vector. Defaults to `128`.
        batch_norm: Whether to use batch normalisation after each hidden
            layer. Defaults to `True` (the reference).
        name: Model name. Defaults to `"generator"`.
        width: Channel multiplier (`h_filters` of the reference). Defaults
            to `64`.

    Returns:
        A built functional `keras.Model`.

    Raises:
        ValueError: if `latent_dim` or `width` is not positive.
    """
    check_positive(latent_dim=latent_dim, width=width)
    init = pytorch_default_initializer()
    latent = keras.Input((latent_dim,), name="latent")
    x = keras.layers.Reshape((1, 1, latent_dim), name="to_map")(latent)
    # (filters, kernel, padding): 1 -> 3 -> 6 -> 14 -> 28 pixels.
    blocks = [(8 * width, 3, 1, "valid"), (4 * width, 4, 2, "same")]
    blocks += [(2 * width, 4, 2, "valid")]
    for index, (filters, kernel, stride, padding) in enumerate(blocks, start=1):
        x = keras.layers.Conv2DTranspose(
            filters,
            kernel,
            strides=stride,
            padding=padding,
            use_bias=not batch_norm,
            kernel_initializer=init,
            name=f"deconv{index}",
        )(x)
        if batch_norm:
            x = pytorch_batch_norm(f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
    x = keras.layers.Conv2DTranspose(
        IMAGE_SHAPE[-1],
        4,
        strides=2,
        padding="same",
        use_bias=not batch_norm,
        kernel_initializer=init,
        name=f"deconv{len(blocks) + 1}",
    )(x)
    image = keras.layers.Activation("tanh", name="image")(x)
    return keras.Model(latent, image, name=name)


def mnist_discriminator(
    name: str = "discriminator",
    spectral_norm: bool = False,
    width: int = 64,
    batch_norm: bool = True,
) -> keras.Model:
    """Builds the MNIST DCGAN discriminator: `[B, 28, 28, 1]` -> logits `[B, 1]`.

    Three 4x4 stride-2 convolutions (PyTorch padding 1, reproduced with
    explicit zero padding so that 7 -> 3 matches) with `1, 2, 4` times
    `width` channels and LeakyReLU(0.2), batch norm after the second and
    third, then a 3x3 valid convolution to one logit. No biases, as in the
    reference.

    Args:
        name: Model name. Defaults to `"discriminator"`.
        spectral_norm: Whether to wrap every convolution in `SpectralNorm`
            (the reference's `gan_type="sngan"`). Defaults to `False`.
        width: Channel multiplier (`h_filters`). Defaults to `64`.
        batch_norm: Whether to use the reference's two batch norms.
            Defaults to `True`.

    Returns:
        A built functional `keras.Model` returning raw logits.

    Raises:
        ValueError: if `width` is not positive.
    """
    check_positive(width=width)
    init = pytorch_default_initializer()
    image = keras.Input(IMAGE_SHAPE, name="image")
    x = image
    for index, filters in enumerate((width, 2 * width, 4 * width), start=1):
        x = keras.layers.ZeroPadding2D(1, name=f"pad{index}")(x)
        conv = keras.layers.Conv2D(
            filters,
            4,
            strides=2,
            use_bias=False,
            kernel_initializer=init,
            name=f"conv{index}",
        )
        x = maybe_spectral_norm(conv, spectral_norm)(x)
        if batch_norm and index > 1:
            x = pytorch_batch_norm(f"bn{index}")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"lrelu{index}")(x)
    conv = keras.layers.Conv2D(
        1, 3, use_bias=False, kernel_initializer=init, name="conv4"
    )
    x = maybe_spectral_norm(conv, spectral_norm)(x)
    logits = keras.layers.Flatten(name="logits")(x)
    return keras.Model(image, logits, name=name)
