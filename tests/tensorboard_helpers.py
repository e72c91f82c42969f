"""Reading TensorBoard event files back, with or without TensorFlow.

The event files are TFRecord files of `Event` protocol buffers, whichever
library wrote them (TensorFlow's `tf.summary`, or tensorboardX). They are
read here with the record framing (length, CRC, data, CRC) and the `Event`
message of whichever of the two is installed, and every value comes back in
one form: a scalar as a float, an image as `(height, width, png_bytes)`.
"""

import importlib.util
import struct


def _event_class():
    if importlib.util.find_spec("tensorflow") is not None:
        from tensorflow.core.util import event_pb2
    else:
        from tensorboardX.proto import event_pb2
    return event_pb2.Event


def _records(path):
    data = path.read_bytes()
    at = 0
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        yield data[at + 12 : at + 12 + length]
        at += 12 + length + 4


def _value(value):
    """`(plugin, value)`: a float, or `(height, width, png)` for an image."""
    kind = value.WhichOneof("value")
    if kind == "simple_value":  # tensorboardX's scalars
        return "scalars", float(value.simple_value)
    if kind == "image":  # tensorboardX's images
        image = value.image
        return "images", (image.height, image.width, image.encoded_image_string)
    plugin = value.metadata.plugin_data.plugin_name
    tensor = value.tensor
    if plugin == "images":  # TensorFlow's: [width, height, png, ...] strings
        width, height, png = tensor.string_val[:3]
        return plugin, (int(height), int(width), png)
    if tensor.float_val:
        return plugin, float(tensor.float_val[0])
    (number,) = struct.unpack("<f", tensor.tensor_content[:4])
    return plugin, float(number)


def events(log_dir) -> dict:
    """`{tag: {step: (plugin, value)}}` of the events under `log_dir`."""
    event_class = _event_class()
    found = {}
    for path in sorted(log_dir.rglob("*tfevents*")):
        for record in _records(path):
            event = event_class.FromString(record)
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = _value(value)
    return found


def png_shape(png: bytes) -> tuple:
    """`(height, width)` from a PNG's header."""
    width, height = struct.unpack(">II", png[16:24])
    return height, width
