"""What `keras-svre train` writes as it trains: TensorBoard logs, the progress
bar's counts, the last N checkpoints and the best one. On both backends (the
logs by TensorFlow's writer, or tensorboardX's without TensorFlow)."""

import json
import os

import keras
import numpy as np
import pytest

from keras_svre import cli
from tests import tensorboard_helpers
from tests.cli_helpers import BACKEND, TINY, fails_cleanly

pytestmark = pytest.mark.jax

# 256 examples in batches of 64: 4 Adam iterations in epoch 1, then 2 SVRE
# iterations per epoch (two batches each).
WARM = ["--take", "256", "--width", "4", "--batch-size", "64", "--verbose", "0"]
WARM += ["--method", "svre", "--warm-start-method", "adam", "--warm-start-epochs", "1"]
MEASURED = ["--evaluate-every", "1", "--best-by", "fid", "--keep-checkpoints", "2"]
MEASURED += ["--log-every", "1"]
# The gradient noise is measured on `tf.data` pipelines (TensorFlow only).
NOISE = BACKEND == "tensorflow"
if NOISE:
    MEASURED += ["--gradient-noise-every", "2"]


def _events(log_dir) -> dict:
    """`{tag: {step: (plugin, value)}}`: a scalar as a float, an image as
    `(height, width, png)`."""
    return tensorboard_helpers.events(log_dir)


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    """Two epochs (Adam, then SVRE) evaluated after each, then resumed for a third."""
    out = tmp_path_factory.mktemp("run")
    argv = ["train", *WARM, *MEASURED, "--data-dir", data_dir, "--out", str(out)]
    assert cli.main([*argv, "--epochs", "2"]) == 0
    before = {
        "kept": sorted(p.name for p in (out / "checkpoints").iterdir()),
        "best": json.loads((out / "best.json").read_text()),
        "events": _events(out / "tensorboard"),
        "summary": json.loads((out / "metrics.json").read_text()),
    }
    # The output options are not run settings: a resumed run is given them again.
    argv = ["train", "--resume", "--epochs", "3", "--verbose", "0", *MEASURED]
    assert cli.main([*argv, "--data-dir", data_dir, "--out", str(out)]) == 0
    return out, before


def test_tensorboard_has_losses_counts_measures_and_grids(run):
    out, before = run
    events = before["events"]
    # The losses and counts every iteration (--log-every 1), at the run's
    # iteration across the switch from Adam to SVRE.
    for tag in ("loss", "generator_loss", "discriminator_loss", "snapshots"):
        assert sorted(events[tag]) == [1, 2, 3, 4, 5, 6], tag
        assert {plugin for plugin, _ in events[tag].values()} == {"scalars"}
    evaluations = events["minibatch_evaluations"]
    assert float(evaluations[6][1]) == before["summary"]["minibatch_evaluations"]
    assert float(evaluations[4][1]) == 4  # Adam: one minibatch per iteration.
    # The evaluations after each epoch (the final one is the last epoch's).
    for measure in ("inception_score", "fid", "entropy", "total_variation", "l2"):
        for which in ("ema", "average", "current"):
            assert sorted(events[f"{measure}_{which}"]) == [4, 6]
    final = before["summary"]["evaluation"]["ema"]["fid"]
    assert float(events["fid_ema"][6][1]) == pytest.approx(final)
    if NOISE:  # The gradient noise, in the epoch it was measured.
        assert events["grad_variance_generator"]
        assert events["grad_second_moment_discriminator"]
    # An 8x8 grid of 28x28 images (1-pixel borders) per generator and epoch.
    for which in ("ema", "average", "current"):
        grids = events[f"samples/{which}"]
        assert sorted(grids) == [4, 6]
        plugin, (height, width, png) = grids[6]
        assert plugin == "images" and (height, width) == (240, 240)
        assert tensorboard_helpers.png_shape(png) == (240, 240)


def test_resumed_run_logs_on_from_the_run_iteration(run):
    out, _ = run
    events = _events(out / "tensorboard")
    assert sorted(events["loss"]) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert sorted(events["fid_ema"]) == [4, 6, 8]


def test_the_last_n_checkpoints_are_kept_and_resume_goes_on(run):
    out, before = run
    assert before["kept"] == ["checkpoint-00000004.keras", "checkpoint-00000006.keras"]
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["checkpoint-00000006.keras", "checkpoint-00000008.keras"]
    latest = keras.models.load_model(out / "checkpoints" / kept[-1])
    resumed = keras.models.load_model(out / "checkpoint.keras")
    for a, b in zip(latest.weights, resumed.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not list(out.glob(".partial-*"))
    assert not list((out / "checkpoints").glob(".partial-*"))


def test_best_checkpoint_is_the_lowest_fid_so_far(run):
    out, before = run
    events = _events(out / "tensorboard")
    scores = {
        (step, which): float(value)
        for which in ("ema", "average", "current")
        for step, (_, value) in events[f"fid_{which}"].items()
    }
    (step, which), value = min(scores.items(), key=lambda item: item[1])
    record = json.loads((out / "best.json").read_text())
    assert record["monitor"] == "fid"
    assert record["value"] == pytest.approx(value, abs=1e-4)
    assert (record["iteration"], record["generator"]) == (step, which)
    assert keras.models.load_model(out / "best.keras").default_generator == which
    # Before resuming, the best was the lowest of the first two epochs.
    first = {k: v for k, v in scores.items() if k[0] <= 6}
    assert before["best"]["value"] == pytest.approx(min(first.values()), abs=1e-4)


def test_progress_bar_shows_the_counts_and_verbose_0_is_quiet(
    tmp_path, data_dir, capsys
):
    argv = ["train", *TINY, "--steps", "2", "--batch-size", "64"]
    argv += ["--no-tensorboard", "--data-dir", data_dir]
    assert cli.main([*argv, "--out", str(tmp_path / "quiet")]) == 0
    quiet = capsys.readouterr().out
    assert "/step" not in quiet and "snapshots:" not in quiet
    assert not (tmp_path / "quiet" / "tensorboard").exists()
    argv = [*argv, "--verbose", "2", "--out", str(tmp_path / "bar")]
    assert cli.main(argv) == 0
    shown = capsys.readouterr().out
    summary = json.loads((tmp_path / "bar" / "metrics.json").read_text())
    assert "/step" in shown
    for count in ("iterations", "minibatch_evaluations", "snapshots"):
        assert f"{count}: {summary[count]:.4f}" in shown, shown


def test_tensorboard_dir_can_be_chosen(tmp_path, data_dir):
    logs = tmp_path / "logs"
    argv = ["train", *TINY, "--steps", "2", "--batch-size", "64"]
    argv += ["--tensorboard", str(logs), "--data-dir", data_dir]
    assert cli.main([*argv, "--out", str(tmp_path / "run")]) == 0
    assert sorted(_events(logs)["loss"]) == [2]
    assert not (tmp_path / "run" / "tensorboard").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--best-by", "fid"], "--best-by needs evaluations during training"),
        (["--best-by", "speed", "--evaluate-every", "1"], "unknown --best-by 'speed'"),
        (["--no-tensorboard", "--tensorboard", "x"], "give one of them"),
        (["--keep-checkpoints", "-1"], "--keep-checkpoints must be at least 0"),
        (["--log-every", "0"], "--log-every must be at least 1"),
        (["--evaluate-every", "1", "--no-evaluate"], "give one of them"),
    ],
)
def test_bad_output_options_exit_2(capsys, tmp_path, extra, message):
    argv = ["train", *extra, "--out", os.fspath(tmp_path / "run")]
    fails_cleanly(capsys, argv, message)
    assert not (tmp_path / "run").exists()
