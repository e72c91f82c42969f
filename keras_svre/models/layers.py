"""Layers and helpers shared by the networks: spectral norm, sum pooling, init."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

# PyTorch's BatchNorm2d defaults; its momentum 0.1 is Keras' 0.9.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


# PyTorch's default convolution initialiser, U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
# which the reference DCGAN code relies on (it never re-initialises weights).
# Keras computes a transposed kernel's fan-in from its output channels, as
# PyTorch does, so the limits agree for Conv2DTranspose as well.
def pytorch_default_initializer() -> keras.initializers.Initializer:
    """Returns the initialiser matching PyTorch's default for conv/linear kernels.

    Returns:
        A `VarianceScaling(scale=1/3, mode="fan_in", distribution="uniform")`
        initialiser, i.e. `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
    """
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


def pytorch_batch_norm(name: str) -> keras.layers.BatchNormalization:
    """Returns a `BatchNormalization` with PyTorch's `BatchNorm2d` defaults.

    Args:
        name: Layer name.

    Returns:
        A `BatchNormalization(momentum=0.9, epsilon=1e-5)` layer.
    """
    return keras.layers.BatchNormalization(
        momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON, name=name
    )


def check_positive(**values: int) -> None:
    """Checks that every keyword argument is a positive integer.

    Args:
        **values: Argument names and the values received.

    Raises:
        ValueError: naming the first argument that is not a positive integer.
    """
    for key, value in values.items():
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(
                f"Argument `{key}` must be a positive integer. Received: {key}={value}"
            )


def _l2_normalize(x: Any, epsilon: float) -> Any:
    return x / (ops.sqrt(ops.sum(ops.square(x))) + epsilon)


@keras.saving.register_keras_serializable(package="keras_svre")
class SpectralNorm(keras.layers.Wrapper):
    """Spectral normalisation that never writes the wrapped layer's kernel.

    The wrapped layer is run with the kernel `W / sigma(W)`, where `sigma(W)`
    is the largest singular value of `W` reshaped to `[-1, out_dim]`,
    estimated by power iteration from a persistent vector `u` (Miyato et al.,
    2018). Gradients flow through `W / sigma(W)` with `u` and `v` held
    constant, as in the paper and PyTorch's implementation.

    State: `vector_u` is a non-trainable variable. A call with
    `training=True` runs `power_iterations` steps and assigns the new `u`
    (so under `stateless_call` the new value is returned among the
    non-trainable variables); a call with `training=False` reads `u` without
    changing it. The trainable kernel itself is never assigned.

    This differs from `keras.layers.SpectralNormalization`, whose training
    call overwrites the wrapped layer's trainable kernel with `W / sigma` and
    then differentiates with respect to the overwritten value. A forward
    pass that changes the trainable weights breaks SVRE, which evaluates
    the networks at snapshot and extrapolated points and must leave the
    parameters untouched while doing so.

    Args:
        layer: A built or unbuilt Keras layer with a `kernel` attribute
            (`Conv2D`, `Conv2DTranspose`, `Dense`, ...).
        power_iterations: Power-iteration steps per training call. Defaults
            to `1`.
        epsilon: Added to norms before dividing. Defaults to `1e-12`.
        **kwargs: Base `Wrapper` keyword arguments (`name`, ...).

    Raises:
        ValueError: if `power_iterations < 1` or `epsilon <= 0`, or at build
            time if the wrapped layer has no `kernel`.

    References:
        - [Miyato et al., 2018](https://arxiv.org/abs/1802.05957)
    """

    def __init__(
        self,
        layer: keras.layers.Layer,
        power_iterations: int = 1,
        epsilon: float = 1e-12,
        **kwargs: Any,
    ) -> None:
        super().__init__(layer, **kwargs)
        if int(power_iterations) < 1:
            raise ValueError(
                "Argument `power_iterations` must be an integer >= 1. "
                f"Received: power_iterations={power_iterations}"
            )
        if epsilon <= 0:
            raise ValueError(
                f"Argument `epsilon` must be positive. Received: epsilon={epsilon}"
            )
        self.power_iterations = int(power_iterations)
        self.epsilon = float(epsilon)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        if not hasattr(self.layer, "kernel"):
            raise ValueError(
                f"SpectralNorm needs a layer with a `kernel`. Received: "
                f"{type(self.layer).__name__}"
            )
        self.vector_u = self.add_weight(
            shape=(1, self.layer.kernel.shape[-1]),
            initializer=keras.initializers.RandomNormal(stddev=1.0),
            trainable=False,
            name="vector_u",
        )

    def normalized_kernel(self, training: bool = False) -> Any:
        """Computes `W / sigma(W)`, assigning the new `u` when training.

        Args:
            training: Whether to run power iteration and store the new `u`.

        Returns:
            The normalised kernel, with the shape of the wrapped kernel.
        """
        kernel = self.layer.kernel
        weight = ops.reshape(kernel.value, (-1, kernel.shape[-1]))
        u = _l2_normalize(self.vector_u.value, self.epsilon)
        v = _l2_normalize(ops.matmul(u, ops.transpose(weight)), self.epsilon)
        if training:
            for step in range(self.power_iterations):
                if step:
                    v = _l2_normalize(
                        ops.matmul(u, ops.transpose(weight)), self.epsilon
                    )
                u = _l2_normalize(ops.matmul(v, weight), self.epsilon)
            self.vector_u.assign(u)
        u = ops.stop_gradient(u)
        v = ops.stop_gradient(v)
        sigma = ops.sum(ops.matmul(v, weight) * u)
        return kernel.value / ops.maximum(sigma, self.epsilon)

    def call(self, inputs: Any, training: bool = False) -> Any:
        kernel = self.layer.kernel
        normalized = self.normalized_kernel(training=bool(training))

        def substituted(variables: list) -> list:
            return [normalized if v is kernel else v.value for v in variables]

        # The wrapped layer reads `self.kernel`; stateless_call hands it the
        # normalised value instead, leaving the variable itself untouched.
        outputs, _ = self.layer.stateless_call(
            substituted(self.layer.trainable_variables),
            substituted(self.layer.non_trainable_variables),
            inputs,
        )
        return outputs

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {"power_iterations": self.power_iterations, "epsilon": self.epsilon}
        )
        return config


@keras.saving.register_keras_serializable(package="keras_svre")
class GlobalSumPooling2D(keras.layers.Layer):
    """Sums NHWC feature maps over height and width (SNGAN's ResNet head).

    A sum rather than a mean keeps the head's scale the one the SNGAN
    discriminator was designed with; with a spectrally normalised final
    layer the two are not equivalent.
    """

    def call(self, inputs: Any) -> Any:
        return ops.sum(inputs, axis=(1, 2))

    def compute_output_shape(self, input_shape: Any) -> tuple:
        return (input_shape[0], input_shape[-1])


def maybe_spectral_norm(layer: keras.layers.Layer, enabled: bool) -> keras.layers.Layer:
    """Wraps `layer` in `SpectralNorm` when `enabled`, else returns it as is.

    Args:
        layer: The layer to wrap.
        enabled: Whether to apply spectral normalisation.

    Returns:
        `SpectralNorm(layer, name=layer.name + "_sn")` or `layer`.
    """
    if not enabled:
        return layer
    return SpectralNorm(layer, name=f"{layer.name}_sn")
