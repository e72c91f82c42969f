"""BatchNorm statistics recomputed for a given set of a network's weights.

A network trained with BatchNorm in training mode normalises each batch with
its own statistics; its moving averages are only for inference, and they lag
weights that move fast. An averaged set of weights (uniform average, EMA)
never ran at all, so no moving statistics belong to it. As stochastic weight
averaging does (Izmailov et al., 2018), the statistics of given weights are
recomputed with forward passes in training mode over fresh inputs, averaging
the batch statistics over the batches.

The passes are stateless (`Layer.stateless_call`): no variable of the network
changes. With a layer's moving statistics fed in as zeros, one training-mode
call returns `(1 - momentum) * batch_statistic`, from which the batch's mean
and variance are read exactly as the layer computes them.

References:
    - [Izmailov et al., 2018](https://arxiv.org/abs/1803.05407): Averaging
      Weights Leads to Wider Optima and Better Generalization.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def batch_norm_statistics(model: keras.Model) -> list[tuple[int, float]]:
    """Where a model's BatchNorm moving statistics are, and their momenta.

    Returns:
        `[(position, momentum)]`: each moving mean and moving variance of a
        `keras.layers.BatchNormalization` inside `model` (nested layers
        included), as its position in `model.non_trainable_variables`.
    """
    positions = {id(v): i for i, v in enumerate(model.non_trainable_variables)}
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        if getattr(layer, "renorm", False):
            raise ValueError(
                f"BatchNorm layer {layer.name!r} uses batch renormalisation, whose "
                "statistics cannot be recomputed this way: build the network "
                "without `renorm`."
            )
        if not layer.momentum < 1.0:
            raise ValueError(
                f"BatchNorm layer {layer.name!r} has momentum {layer.momentum}: its "
                "moving statistics never change, and cannot be recomputed."
            )
        for variable in (layer.moving_mean, layer.moving_variance):
            found.append((positions[id(variable)], float(layer.momentum)))
    return found


class StatisticsPass:
    """Recomputes a model's BatchNorm statistics for given weights.

    Args:
        model: A built Keras model (e.g. a GAN's generator).
        compile_function: How to compile the per-batch function (the game
            backend's `compile_function`).
    """

    def __init__(self, model, compile_function):
        self.model = model
        self.statistics = batch_norm_statistics(model)
        positions = [position for position, _ in self.statistics]

        def batch(trainable, non_trainable, inputs):
            _, updated = model.stateless_call(
                trainable, non_trainable, inputs, training=True
            )
            return [updated[i] for i in positions]

        self._batch = compile_function(batch) if self.statistics else None

    def __call__(self, trainable, non_trainable, input_batches):
        """The model's non-trainable values with BatchNorm statistics recomputed.

        Args:
            trainable: The model's trainable values (the weights to use).
            non_trainable: Its non-trainable values; everything but the
                BatchNorm statistics is returned as given.
            input_batches: An iterable of input batches (e.g. latents).

        Returns:
            A list of tensors aligned with `model.non_trainable_variables`.
        """
        state = list(non_trainable)
        if not self.statistics:
            return state
        zeroed = list(state)
        for position, _ in self.statistics:
            zeroed[position] = ops.zeros_like(state[position])
        totals, count = None, 0
        for inputs in input_batches:
            values = [
                np.asarray(ops.convert_to_numpy(v), "float64")
                for v in self._batch(trainable, zeroed, inputs)
            ]
            totals = (
                values if totals is None else [t + v for t, v in zip(totals, values)]
            )
            count += 1
        if count == 0:
            raise ValueError("The BatchNorm statistics need at least one batch.")
        for (position, momentum), total in zip(self.statistics, totals):
            dtype = keras.backend.standardize_dtype(state[position].dtype)
            mean = total / count / (1.0 - momentum)
            state[position] = ops.convert_to_tensor(mean.astype(dtype))
        return state
