"""SAGAN-style DCGAN of the SVRE paper's CIFAR-10 and SVHN experiments (32x32x3).

Follows `Generator` and `Discriminator` of the reference code
(Chavdarova/SVRE, `svre/sagan_models.py`, with `image_size=32`,
`conv_dim=64`, `z_dim=128`):

    generator      z -> 4x4x256 -> 8x8x128 [attn] -> 16x16x64 [attn]
                   -> 32x32x3, tanh; batch norm + ReLU, spectral norm on
                   every transposed convolution but the last
    discriminator  32x32x3 -> 16x16x64 -> 8x8x128 -> 4x4x256 [attn] -> 1,
                   LeakyReLU(0.1), spectral norm on every convolution but
                   the last

The reference always uses the attention blocks; here they are optional
(`self_attention`), giving the plain "dcgan32" and the "dcgan32_sa"
networks. The discriminator returns logits of shape `[B, 1]`. Layout is
NHWC.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from keras_svre.models.layers import (
    check_positive,
    maybe_spectral_norm,
    pytorch_batch_norm,
    pytorch_default_initializer,
)

IMAGE_SHAPE = (32, 32, 3)


@keras.saving.register_keras_serializable(package="keras_svre")
class SelfAttention(keras.layers.Layer):
    """SAGAN self-attention over the spatial positions of an NHWC feature map.

    With `N = H * W` positions, 1x1 convolutions give queries and keys of
    `C // reduction` channels and values of `C` channels; position `i`
    attends to all `j` with `softmax_j(q_i . k_j)`, and the layer returns
    `x + gamma * attended`, with the scalar `gamma` initialised at zero so
    that the block starts as the identity.

    Args:
        reduction: Channel reduction of queries and keys. Defaults to `8`.
        **kwargs: Base `Layer` keyword arguments (`name`, ...).

    Raises:
        ValueError: if `reduction < 1`.

    References:
        - [Zhang et al., 2019](https://arxiv.org/abs/1805.08318)
    """

    def __init__(self, reduction: int = 8, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(reduction) < 1:
            raise ValueError(
                "Argument `reduction` must be a positive integer. "
                f"Received: reduction={reduction}"
            )
        self.reduction = int(reduction)

    def build(self, input_shape: Any) -> None:
        channels = int(input_shape[-1])
        key_channels = max(1, channels // self.reduction)
        init = pytorch_default_initializer()
        self.query = keras.layers.Conv2D(
            key_channels, 1, kernel_initializer=init, name="query"
        )
        self.key = keras.layers.Conv2D(
            key_channels, 1, kernel_initializer=init, name="key"
        )
        self.value = keras.layers.Conv2D(
            channels, 1, kernel_initializer=init, name="value"
        )
        for conv in (self.query, self.key, self.value):
            conv.build(input_shape)
        self.gamma = self.add_weight(
            shape=(), initializer="zeros", trainable=True, name="gamma"
        )

    def call(self, inputs: Any) -> Any:
        shape = ops.shape(inputs)
        positions = shape[1] * shape[2]

        def flat(x: Any) -> Any:
            return ops.reshape(x, (shape[0], positions, ops.shape(x)[-1]))

        query = flat(self.query(inputs))
        key = flat(self.key(inputs))
        value = flat(self.value(inputs))
        attention = ops.softmax(ops.einsum("bic,bjc->bij", query, key), axis=-1)
        attended = ops.reshape(ops.einsum("bij,bjc->bic", attention, value), shape)
        return inputs + self.gamma * attended

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"reduction": self.reduction})
        return config


def dcgan32_generator(
    latent_dim: int = 128,
    width: int = 64,
    self_attention: bool = False,
    spectral_norm: bool = True,
    name: str = "generator",
) -> keras.Model:
    """Builds the SAGAN-style DCGAN generator: `[B, latent_dim]` -> `[B, 32, 32, 3]`.

    Args:
        latent_dim: Size of the latent vector. Defaults to `128`.
        width: Channel multiplier (`g_conv_dim`); hidden layers have
            `4, 2, 1` times `width` channels. Defaults to `64`.
        self_attention: Whether to add `SelfAttention` after the 8x8 and
            16x16 layers, as the reference does. Defaults to `False`.
        spectral_norm: Whether to spectrally normalise the hidden
            transposed convolutions, as the reference does. Defaults to
            `True`.
        name: Model name. Defaults to `"generator"`.

    Returns:
        A built functional `keras.Model` with tanh outputs in `[-1, 1]`.

    Raises:
        ValueError: if `latent_dim` or `width` is not positive.
    """
    check_positive(latent_dim=latent_dim, width=width)
    init = pytorch_default_initializer()
    latent = keras.Input((latent_dim,), name="latent")
    x = keras.layers.Reshape((1, 1, latent_dim), name="to_map")(latent)
    # (filters, strides, padding): 1 -> 4 -> 8 -> 16 pixels.
    blocks = [(4 * width, 1, "valid"), (2 * width, 2, "same"), (width, 2, "same")]
    for index, (filters, strides, padding) in enumerate(blocks, start=1):
        conv = keras.layers.Conv2DTranspose(
            filters,
            4,
            strides=strides,
            padding=padding,
            kernel_initializer=init,
            name=f"deconv{index}",
        )
        x = maybe_spectral_norm(conv, spectral_norm)(x)
        x = pytorch_batch_norm(f"bn{index}")(x)
        x = keras.layers.ReLU(name=f"relu{index}")(x)
        if self_attention and index > 1:
            x = SelfAttention(name=f"attention{index - 1}")(x)
    x = keras.layers.Conv2DTranspose(
        IMAGE_SHAPE[-1],
        4,
        strides=2,
        padding="same",
        kernel_initializer=init,
        name=f"deconv{len(blocks) + 1}",
    )(x)
    image = keras.layers.Activation("tanh", name="image")(x)
    return keras.Model(latent, image, name=name)


def dcgan32_discriminator(
    width: int = 64,
    self_attention: bool = False,
    spectral_norm: bool = True,
    name: str = "discriminator",
) -> keras.Model:
    """Builds the 32x32 SAGAN-style DCGAN discriminator: `[B, 32, 32, 3]` -> `[B, 1]`.

    Args:
        width: Channel multiplier (`d_conv_dim`); hidden layers have
            `1, 2, 4` times `width` channels. Defaults to `64`.
        self_attention: Whether to add `SelfAttention` on the 4x4 features,
            as the reference does. Defaults to `False`.
        spectral_norm: Whether to spectrally normalise the hidden
            convolutions, as the reference does. Defaults to `True`.
        name: Model name. Defaults to `"discriminator"`.

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
        conv = keras.layers.Conv2D(
            filters,
            4,
            strides=2,
            padding="same",
            kernel_initializer=init,
            name=f"conv{index}",
        )
        x = maybe_spectral_norm(conv, spectral_norm)(x)
        x = keras.layers.LeakyReLU(0.1, name=f"lrelu{index}")(x)
    if self_attention:
        x = SelfAttention(name="attention1")(x)
    x = keras.layers.Conv2D(1, 4, kernel_initializer=init, name="conv4")(x)
    logits = keras.layers.Flatten(name="logits")(x)
    return keras.Model(image, logits, name=name)
