"""TensorBoard summaries written with TensorFlow alone.

`tf.summary.scalar` and `tf.summary.image` live in the `tensorboard`
package, which TensorFlow does not require. `tf.summary.write` with the
scalars or images plugin's metadata writes the same events, so the logs need
only TensorFlow; the `tensorboard` command reads them.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2


def _metadata(plugin_name: str, data_class) -> bytes:
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = plugin_name
    metadata.data_class = data_class
    return metadata.SerializeToString()


def write_scalar(name: str, value: float, step: int) -> None:
    """A scalar, to the default summary writer."""
    tf.summary.write(
        name,
        tf.constant(value, tf.float32),
        step=step,
        metadata=_metadata("scalars", summary_pb2.DATA_CLASS_SCALAR),
    )


def write_image(name: str, image: np.ndarray, step: int) -> None:
    """One image in [0, 1] (`[H, W, C]`, C = 1, 3 or 4), to the default writer.

    The images plugin reads a string tensor `[width, height, png, ...]`.
    """
    height, width = image.shape[:2]
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    tensor = tf.stack(
        [
            tf.constant(str(width)),
            tf.constant(str(height)),
            tf.io.encode_png(pixels),
        ]
    )
    tf.summary.write(
        name,
        tensor,
        step=step,
        metadata=_metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE),
    )
