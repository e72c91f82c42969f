"""The stochastic bilinear game of the SVRE paper (Fig. 4), as a `Game`."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_svre.game import Game
from keras_svre.losses import batch_mean


@keras.saving.register_keras_serializable(package="keras_svre")
class BilinearGame(Game):
    """`min_x max_y (1/n) sum_i x^T M_i y + a_i^T x + b_i^T y`.

    `M_i = e_i e_i^T` (one 1 on the diagonal, so `n` must equal `dim`) and
    `a_i, b_i ~ N(0, 1/dim)`. The mean game has `M = I/n`, hence the solution
    `x* = -n mean(b)`, `y* = -n mean(a)`. Each element of the training data is
    a minibatch of component indices i. Player `x` minimises the minibatch
    mean of `f_i`, player `y` maximises it (its loss is `-f_i`).

    Args:
        dim: Dimension of x and y (and the number of components n).
        seed: Seed of the game's data (a_i, b_i) and starting point; also the
            seed of the snapshot-restart draws.
        dtype: Variable dtype; `"float64"` for exact comparisons.
        **kwargs: Passed to `keras_svre.Game`.
    """

    def __init__(self, dim: int = 100, seed: int = 0, dtype="float64", **kwargs):
        super().__init__(seed=seed, dtype=dtype, **kwargs)
        self.dim = int(dim)
        rng = np.random.default_rng(seed)
        scale = np.sqrt(1.0 / dim)
        a = rng.normal(0.0, scale, (dim, dim))
        b = rng.normal(0.0, scale, (dim, dim))
        x0 = rng.normal(0.0, scale, dim)
        y0 = rng.normal(0.0, scale, dim)

        def weight(name, value, trainable):
            return self.add_weight(
                shape=value.shape,
                dtype=dtype,
                initializer=keras.initializers.Constant(value),
                trainable=trainable,
                name=name,
            )

        self.a = weight("a", a, False)
        self.b = weight("b", b, False)
        self.x = weight("x", x0, True)
        self.y = weight("y", y0, True)
        self.built = True

    def players(self):
        return {"x": [self.x], "y": [self.y]}

    def compute_player_losses(self, data, training=True):
        index = ops.reshape(ops.cast(data, "int32"), (-1,))
        x = ops.convert_to_tensor(self.x)
        y = ops.convert_to_tensor(self.y)
        a_i = ops.take(ops.convert_to_tensor(self.a), index, axis=0)
        b_i = ops.take(ops.convert_to_tensor(self.b), index, axis=0)
        f = (
            ops.take(x, index) * ops.take(y, index)
            + ops.matmul(a_i, x)
            + ops.matmul(b_i, y)
        )
        f = batch_mean(f)
        return {"x": f, "y": -f}

    def solution(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean game's solution `(x*, y*)`."""
        n = self.dim
        return (
            -n * np.asarray(self.b).mean(axis=0),
            -n * np.asarray(self.a).mean(axis=0),
        )

    def distance_to_solution(self, x=None, y=None) -> float:
        """`||x - x*|| + ||y - y*||` (defaults to the current iterate)."""
        x_star, y_star = self.solution()
        x = np.asarray(self.x) if x is None else np.asarray(x)
        y = np.asarray(self.y) if y is None else np.asarray(y)
        return float(np.linalg.norm(x - x_star) + np.linalg.norm(y - y_star))

    def averaged_distance(self) -> float:
        """Distance of the uniform average of the iterates kept by SVRE.

        Falls back to the current iterate when no average is kept.
        """
        for opt in self.svre_optimizers:
            if opt.keeps_average:
                x, y = (np.asarray(v) for v in opt.average_values([self.x, self.y]))
                return self.distance_to_solution(x, y)
        return self.distance_to_solution()

    def component_dataset(
        self, batch_size: int = 1, shuffle: bool = True, seed: int | None = None
    ):
        """The finite sum as a `tf.data.Dataset`: component indices, reshuffled each epoch.

        Needs TensorFlow; `component_minibatches` is the same without it.
        """
        from keras_svre import _optional

        tf = _optional.tensorflow("`BilinearGame.component_dataset`")
        ds = tf.data.Dataset.range(self.dim)
        if shuffle:
            ds = ds.shuffle(self.dim, seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size, drop_remainder=True)

    def component_minibatches(
        self, batch_size: int = 1, shuffle: bool = True, seed: int | None = None
    ):
        """The finite sum as NumPy minibatches of component indices (no TensorFlow).

        Reshuffled each epoch when `shuffle`; every batch is full.

        Returns:
            A `keras_svre.data.ArrayMinibatches`.
        """
        from keras_svre.data.arrays import ArrayMinibatches

        return ArrayMinibatches(
            np.arange(self.dim, dtype="int64"),
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            drop_remainder=True,
        )

    def get_config(self):
        return {
            "dim": self.dim,
            "seed": self.seed,
            "dtype": self.dtype_policy.name,
            "name": self.name,
        }
