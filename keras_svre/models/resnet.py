"""ResNet generator and discriminator for 32x32x3 images (SNGAN / WGAN-GP style).

The public SVRE code ships no ResNet definition, so these follow the
standard CIFAR-10 ResNets of Gulrajani et al. (2017, WGAN-GP) and Miyato et
al. (2018, SNGAN):

    generator      z -> dense 4x4xC -> 3 x up-block (8, 16, 32) -> BN, ReLU,
                   3x3 conv to 3 channels, tanh
    discriminator  optimised block (32 -> 16) -> down-block (16 -> 8)
                   -> 2 x block (8x8) -> ReLU, global sum pool, dense to 1

An up-block is `BN, ReLU, upsample, conv3x3, BN, ReLU, conv3x3` plus an
`upsample, conv1x1` shortcut. A discriminator block is `ReLU, conv3x3, ReLU,
conv3x3[, avg-pool]` with a `conv1x1[, avg-pool]` shortcut when it
downsamples (identity otherwise); the optimised first block skips the
leading ReLU and pools before its shortcut convolution. Layout is NHWC.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_svre.models.layers import (
    GlobalSumPooling2D,
    check_positive,
    maybe_spectral_norm,
    pytorch_batch_norm,
)

IMAGE_SHAPE = (32, 32, 3)


def _conv(
    x: Any, filters: int, kernel: int, name: str, spectral_norm: bool = False
) -> Any:
    conv = keras.layers.Conv2D(filters, kernel, padding="same", name=name)
    return maybe_spectral_norm(conv, spectral_norm)(x)


def _up_block(x: Any, filters: int, name: str) -> Any:
    shortcut = keras.layers.UpSampling2D(name=f"{name}_shortcut_up")(x)
    shortcut = _conv(shortcut, filters, 1, f"{name}_shortcut_conv")
    h = pytorch_batch_norm(f"{name}_bn1")(x)
    h = keras.layers.ReLU(name=f"{name}_relu1")(h)
    h = keras.layers.UpSampling2D(name=f"{name}_up")(h)
    h = _conv(h, filters, 3, f"{name}_conv1")
    h = pytorch_batch_norm(f"{name}_bn2")(h)
    h = keras.layers.ReLU(name=f"{name}_relu2")(h)
    h = _conv(h, filters, 3, f"{name}_conv2")
    return keras.layers.Add(name=f"{name}_add")([h, shortcut])


def _down_block(
    x: Any,
    filters: int,
    name: str,
    spectral_norm: bool,
    downsample: bool = True,
    optimized: bool = False,
) -> Any:
    h = x if optimized else keras.layers.ReLU(name=f"{name}_relu1")(x)
    h = _conv(h, filters, 3, f"{name}_conv1", spectral_norm)
    h = keras.layers.ReLU(name=f"{name}_relu2")(h)
    h = _conv(h, filters, 3, f"{name}_conv2", spectral_norm)
    if downsample:
        h = keras.layers.AveragePooling2D(2, name=f"{name}_pool")(h)
    shortcut = x
    if optimized:
        # Pooling first is cheaper and, both being linear, equivalent.
        shortcut = keras.layers.AveragePooling2D(2, name=f"{name}_shortcut_pool")(x)
        shortcut = _conv(shortcut, filters, 1, f"{name}_shortcut_conv", spectral_norm)
    elif downsample or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, f"{name}_shortcut_conv", spectral_norm)
        if downsample:
            shortcut = keras.layers.AveragePooling2D(2, name=f"{name}_shortcut_pool")(
                shortcut
            )
    return keras.layers.Add(name=f"{name}_add")([h, shortcut])


def resnet32_generator(
    latent_dim: int = 128, width: int = 128, name: str = "generator"
) -> keras.Model:
    """Builds the 32x32 ResNet generator: `[B, latent_dim]` -> `[B, 32, 32, 3]`.

    Args:
        latent_dim: Size of the latent vector. Defaults to `128`.
        width: Channels of every residual block. Defaults to `128`
            (WGAN-GP; SNGAN uses 256).
        name: Model name. Defaults to `"generator"`.

    Returns:
        A built functional `keras.Model` with tanh outputs in `[-1, 1]`.

    Raises:
        ValueError: if `latent_dim` or `width` is not positive.
    """
    check_positive(latent_dim=latent_dim, width=width)
    latent = keras.Input((latent_dim,), name="latent")
    x = keras.layers.Dense(4 * 4 * width, name="dense")(latent)
    x = keras.layers.Reshape((4, 4, width), name="to_map")(x)
    for index in range(1, 4):
        x = _up_block(x, width, f"block{index}")
    x = pytorch_batch_norm("bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = _conv(x, IMAGE_SHAPE[-1], 3, "conv")
    image = keras.layers.Activation("tanh", name="image")(x)
    return keras.Model(latent, image, name=name)


def resnet32_discriminator(
    width: int = 128, spectral_norm: bool = True, name: str = "discriminator"
) -> keras.Model:
    """Builds the 32x32 ResNet discriminator: `[B, 32, 32, 3]` -> logits `[B, 1]`.

    Args:
        width: Channels of every residual block. Defaults to `128`.
        spectral_norm: Whether to spectrally normalise every convolution and
            the final dense layer (SNGAN). Defaults to `True`.
        name: Model name. Defaults to `"discriminator"`.

    Returns:
        A built functional `keras.Model` returning raw logits.

    Raises:
        ValueError: if `width` is not positive.
    """
    check_positive(width=width)
    image = keras.Input(IMAGE_SHAPE, name="image")
    x = _down_block(image, width, "block1", spectral_norm, optimized=True)
    x = _down_block(x, width, "block2", spectral_norm)
    x = _down_block(x, width, "block3", spectral_norm, downsample=False)
    x = _down_block(x, width, "block4", spectral_norm, downsample=False)
    x = keras.layers.ReLU(name="relu")(x)
    x = GlobalSumPooling2D(name="sum_pool")(x)
    dense = keras.layers.Dense(1, name="logits")
    logits = maybe_spectral_norm(dense, spectral_norm)(x)
    return keras.Model(image, logits, name=name)
