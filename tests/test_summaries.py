"""The TensorBoard writers: what a write puts in the event file is there to read
as soon as the writer is flushed, and two writers of one folder keep apart."""

import importlib.util

import numpy as np
import pytest

from keras_svre import summaries

from . import tensorboard_helpers

pytestmark = pytest.mark.jax


def _writer(writer_class, module):
    """`writer_class` as a test parameter, skipped where `module` is missing."""
    missing = importlib.util.find_spec(module) is None
    return pytest.param(
        writer_class,
        marks=pytest.mark.skipif(missing, reason=f"needs {module}"),
        id=module,
    )


WRITERS = [
    _writer(summaries.TensorFlowWriter, "tensorflow"),
    _writer(summaries.TensorBoardXWriter, "tensorboardX"),
]


@pytest.mark.parametrize("writer_class", WRITERS)
def test_a_flushed_write_is_in_the_file_at_once(tmp_path, writer_class):
    writer = writer_class(tmp_path)
    image = np.linspace(0.0, 1.0, 4 * 6 * 3).reshape(4, 6, 3)
    for step in range(1, 40):
        writer.scalars({"loss": 0.5 * step}, step)
    writer.image("samples/ema", image, 39)
    writer.scalars({"fid_ema": 12.25}, 39)
    writer.flush()
    # No close and no wait: the command returns, and its events are read.
    events = tensorboard_helpers.events(tmp_path)
    assert events["loss"] == {s: ("scalars", 0.5 * s) for s in range(1, 40)}
    assert events["fid_ema"] == {39: ("scalars", 12.25)}
    plugin, (height, width, png) = events["samples/ema"][39]
    assert (plugin, height, width) == ("images", 4, 6)
    assert png.startswith(b"\x89PNG")


@pytest.mark.parametrize("writer_class", WRITERS)
def test_two_writers_of_one_folder_keep_their_events(tmp_path, writer_class):
    # The training logger and the evaluation open writers within one second.
    first, second = writer_class(tmp_path), writer_class(tmp_path)
    first.scalars({"loss": 1.0}, 1)
    second.scalars({"fid_ema": 2.0}, 1)
    first.scalars({"loss": 3.0}, 2)
    first.flush()
    second.flush()
    events = tensorboard_helpers.events(tmp_path)
    assert events["loss"] == {1: ("scalars", 1.0), 2: ("scalars", 3.0)}
    assert events["fid_ema"] == {1: ("scalars", 2.0)}
