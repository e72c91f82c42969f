"""Callbacks for GAN training: sample grids, safe checkpoints, non-finite stop."""

from __future__ import annotations

import math
import os
import pathlib

import keras
import numpy as np


def save_image_grid(images: np.ndarray, path, columns: int | None = None) -> None:
    """Writes images in [0, 1] (`[N, H, W, C]`) as one PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = np.clip(np.asarray(images, dtype="float32"), 0.0, 1.0)
    n, h, w, c = images.shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    grid = np.ones((rows * (h + 2), columns * (w + 2), c), dtype="float32")
    for k, image in enumerate(images):
        r, q = divmod(k, columns)
        grid[
            r * (h + 2) + 1 : r * (h + 2) + 1 + h, q * (w + 2) + 1 : q * (w + 2) + 1 + w
        ] = image
    if c == 1:
        grid = grid[..., 0]
    plt.imsave(str(path), grid, cmap="gray" if c == 1 else None, vmin=0.0, vmax=1.0)


class SampleGrid(keras.callbacks.Callback):
    """Saves a PNG grid of generated images at the end of each epoch.

    The same latent vectors are used every time, so the grids show how the
    generator evolves.

    Args:
        directory: Output folder; files are `samples_epoch_{epoch:03d}.png`.
        num_images: Number of images in the grid. Defaults to `64`.
        which: Generator to sample: `"average"`, `"ema"` or `"current"`.
        seed: Seed of the fixed latent vectors.
    """

    def __init__(self, directory, num_images: int = 64, which: str = "average", seed=0):
        super().__init__()
        self.directory = pathlib.Path(directory)
        self.num_images = num_images
        self.which = which
        self.seed = seed
        self._latents = None

    def on_epoch_end(self, epoch, logs=None):
        if self._latents is None:
            rng = np.random.default_rng(self.seed)
            self._latents = rng.standard_normal(
                (self.num_images, self.model.latent_dim)
            ).astype("float32")
        self.directory.mkdir(parents=True, exist_ok=True)
        images = self.model.generate(self._latents, which=self.which)
        save_image_grid(
            (images + 1.0) / 2.0, self.directory / f"samples_epoch_{epoch + 1:03d}.png"
        )


def save_atomically(model: keras.Model, path) -> None:
    """`model.save(path)` through a temporary file and an atomic rename.

    A process killed while saving leaves the previous file intact, never a
    half-written one.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    model.save(tmp)
    os.replace(tmp, path)


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss became NaN or infinite."""


class GuardedCheckpoint(keras.callbacks.Callback):
    """Checkpoints every N iterations while the losses are finite; stops on NaN/inf.

    On a non-finite loss, training stops at once and the last checkpoint (the
    last state whose losses were all finite) is left in place;
    `nonfinite_step` says where it happened. Checkpoints are written
    atomically (`save_atomically`).

    Args:
        path: The `.keras` checkpoint file.
        every_steps: Write a checkpoint every this many iterations (and at the
            end of each epoch). `0` writes at epoch ends only.
    """

    def __init__(self, path, every_steps: int = 0):
        super().__init__()
        self.path = pathlib.Path(path)
        self.every_steps = int(every_steps)
        self.nonfinite_step = None
        self._step = 0

    def on_train_begin(self, logs=None):
        self._step = int(self.model.game_optimizers[0].iterations.numpy())

    def _finite(self, logs):
        return all(math.isfinite(float(v)) for v in (logs or {}).values())

    def on_train_batch_end(self, batch, logs=None):
        self._step = int(self.model.game_optimizers[0].iterations.numpy())
        if not self._finite(logs):
            self.nonfinite_step = self._step
            self.model.stop_training = True
            return
        if self.every_steps and self._step % self.every_steps == 0:
            save_atomically(self.model, self.path)

    def on_epoch_end(self, epoch, logs=None):
        if self.nonfinite_step is None and self._finite(logs):
            save_atomically(self.model, self.path)
