"""TensorBoard summaries, written with TensorFlow or, without it, tensorboardX.

`tf.summary.scalar` and `tf.summary.image` live in the `tensorboard`
package, which TensorFlow does not require. `tf.summary.write` with the
scalars or images plugin's metadata writes the same events, so the logs need
only TensorFlow; the `tensorboard` command reads them.

Without TensorFlow (the JAX install, `keras-svre[jax]`), `tensorboardX`
writes the event files instead: the same tags at the same steps, scalars as
scalars and images as PNG images, which the `tensorboard` command reads
alike. `create_writer(log_dir)` picks the one that is installed.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pathlib
import time

import numpy as np


def _metadata(plugin_name: str, data_class) -> bytes:
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin_name
    metadata.data_class = data_class
    return metadata.SerializeToString()


def write_scalar(name: str, value: float, step: int) -> None:
    """A scalar, to TensorFlow's default summary writer."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    tf.summary.write(
        name,
        tf.constant(value, tf.float32),
        step=step,
        metadata=_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR),
    )


def _pixels(image: np.ndarray) -> np.ndarray:
    """An image in [0, 1] as uint8 pixels."""
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_image(name: str, image: np.ndarray, step: int) -> None:
    """One image in [0, 1] (`[H, W, C]`, C = 1, 3 or 4), to TensorFlow's
    default writer.

    The images plugin reads a string tensor `[width, height, png, ...]`.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    height, width = image.shape[:2]
    tensor = tf.stack(
        [
            tf.constant(str(width)),
            tf.constant(str(height)),
            tf.io.encode_png(_pixels(image)),
        ]
    )
    tf.summary.write(
        name,
        tensor,
        step=step,
        metadata=_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE),
    )


class TensorFlowWriter:
    """Scalars and images through `tf.summary` (TensorFlow only)."""

    def __init__(self, log_dir):
        import tensorflow as tf

        self._writer = tf.summary.create_file_writer(str(log_dir))

    def scalars(self, values: dict, step: int) -> None:
        """Writes `{tag: number}` at `step`."""
        with self._writer.as_default():
            for tag, value in values.items():
                write_scalar(tag, float(value), int(step))

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Writes one image in [0, 1], `[H, W, C]`."""
        with self._writer.as_default():
            write_image(tag, image, int(step))

    def flush(self) -> None:
        self._writer.flush()


class TensorBoardXWriter:
    """Scalars and images through `tensorboardX` (no TensorFlow needed).

    The events are written synchronously with tensorboardX's `EventsWriter`,
    not through its `SummaryWriter`, whose background thread writes what it
    is given later: its `flush()` does not wait for that thread, so events
    written just before a run ends (the final evaluation) could be missing
    from the file when the command returned. The file's name carries the
    process id and a counter, since tensorboardX names files by the second
    and two writers opened in the same second would share a file.
    """

    _opened = itertools.count()

    def __init__(self, log_dir):
        from tensorboardX.event_file_writer import EventsWriter

        log_dir = pathlib.Path(log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        suffix = f".{os.getpid()}.{next(self._opened)}"
        self._events = EventsWriter(str(log_dir / "events"), suffix)

    def _write(self, summary, step: int) -> None:
        from tensorboardX.proto import event_pb2

        event = event_pb2.Event(summary=summary, wall_time=time.time(), step=step)
        self._events.write_event(event)

    def scalars(self, values: dict, step: int) -> None:
        """Writes `{tag: number}` at `step`."""
        from tensorboardX import summary

        for tag, value in values.items():
            self._write(summary.scalar(tag, float(value)), int(step))

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        """Writes one image in [0, 1], `[H, W, C]`, as a PNG."""
        from tensorboardX import summary

        self._write(summary.image(tag, _pixels(image), dataformats="HWC"), int(step))

    def flush(self) -> None:
        self._events.flush()


def available() -> bool:
    """Whether TensorBoard logs can be written (TensorFlow or tensorboardX)."""
    return any(
        importlib.util.find_spec(name) is not None
        for name in ("tensorflow", "tensorboardX")
    )


def create_writer(log_dir):
    """A summary writer for `log_dir`: TensorFlow's if installed, else tensorboardX's.

    Raises:
        ImportError: (one line) if neither is installed.
    """
    if importlib.util.find_spec("tensorflow") is not None:
        return TensorFlowWriter(log_dir)
    if importlib.util.find_spec("tensorboardX") is not None:
        return TensorBoardXWriter(log_dir)
    raise ImportError(
        "TensorBoard logs need TensorFlow or tensorboardX, and neither is "
        'installed: `pip install "keras-svre[jax]"` (or `pip install '
        "tensorboardX`)."
    )
