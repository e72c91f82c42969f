"""The `keras-svre` command line: train, sample, and bad input (exit 2, no traceback).

The same tests on both backends (`KERAS_BACKEND=jax pytest -m jax
tests/test_cli.py`), but for the TensorFlow-only features (`tf.distribute`
strategies, TFDS datasets). On JAX the offline digits are NumPy arrays and
`--data-dir` is unused.
"""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_svre
from keras_svre import cli
from tests import tensorboard_helpers
from tests.cli_helpers import BACKEND, TINY, fails_cleanly, tensorflow_only

pytestmark = pytest.mark.jax

# TensorFlow's op determinism; JAX on CPU is deterministic (the flag is refused).
DETERMINISTIC = ["--deterministic"] if BACKEND == "tensorflow" else []


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A two-iteration SVRE run (one epoch of 4 batches of 64)."""
    out = tmp_path_factory.mktemp("run")
    argv = ["train", *TINY, "--steps", "2", "--batch-size", "64"]
    argv += ["--data-dir", data_dir, "--out", os.fspath(out)]
    assert cli.main(argv) == 0
    return out


def test_train_leaves_samples_metrics_and_model(trained):
    assert (trained / "samples_epoch_001.png").stat().st_size > 0
    with open(trained / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and {"generator_loss", "discriminator_loss"} <= set(rows[0])
    summary = json.loads((trained / "metrics.json").read_text())
    assert summary["backend"] == BACKEND
    assert summary["iterations"] == 2
    # 4 per SVRE iteration, plus n = 4 minibatches' worth per snapshot pass.
    assert summary["snapshots"] >= 1
    assert summary["minibatch_evaluations"] == 8 + 4 * summary["snapshots"]
    assert np.isfinite(summary["final_losses"]["generator_loss"])
    model = keras.models.load_model(trained / "model.keras")
    assert isinstance(model, keras_svre.GAN)
    assert isinstance(model.optimizer, keras_svre.SVRE)
    # The SVRE default: one snapshot per pass on average (n = 4 batches).
    assert model.optimizer.restart_probability == pytest.approx(0.25)
    run = json.loads((trained / "run.json").read_text())
    assert run["method"] == "svre" and run["steps"] == 2
    assert run["backend"] == BACKEND
    assert not list(trained.glob(".partial-*"))


def test_sample_writes_images_in_the_unit_range(trained, tmp_path, capsys):
    out = tmp_path / "samples" / "images.npy"
    argv = ["sample", "--model", os.fspath(trained / "model.keras")]
    assert cli.main([*argv, "--num", "5", "--out", os.fspath(out)]) == 0
    images = np.load(out)
    assert images.shape == (5, 28, 28, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert images.std() > 0
    out = capsys.readouterr().out
    assert "wrote 5 images" in out
    # The run was not evaluated (--no-evaluate): no score chose the generator.
    assert "from the ema generator (the model's default generator; no evaluation" in out
    assert "scored best" not in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["train", "--method", "sgd-x"], "unknown method 'sgd-x'"),
        (["train", "--architecture", "vgg"], "unknown architecture 'vgg'"),
        (["train", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["train", "--tpu", "grpc://10.0.0.2:8470"], "--tpu needs --strategy tpu"),
        (["sample", "--model", "no/such.keras", "--out", "x.npy"], "no such model"),
    ],
)
def test_bad_arguments_exit_2(capsys, argv, message):
    fails_cleanly(capsys, argv, message)


def test_unknown_strategy_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--strategy", "horovod"])
    assert exit_info.value.code == cli.EXIT_USAGE
    assert "invalid choice: 'horovod'" in capsys.readouterr().err


@tensorflow_only
def test_multiworker_needs_tf_config(capsys, monkeypatch, tmp_path, data_dir):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    argv = ["train", *TINY, "--strategy", "multiworker", "--out", os.fspath(tmp_path)]
    fails_cleanly(capsys, [*argv, "--data-dir", data_dir], "TF_CONFIG")


def test_resume_needs_a_run(capsys, tmp_path):
    argv = ["train", "--resume", "--out", os.fspath(tmp_path)]
    fails_cleanly(capsys, argv, "nothing to resume")


def test_resume_refuses_other_settings(capsys, trained, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text((trained / "run.json").read_text())
    argv = ["train", "--resume", "--out", os.fspath(out), "--method", "sgda"]
    err = fails_cleanly(capsys, argv, "--method sgda (the run has svre)")
    assert "continues a run with its own settings" in err


@tensorflow_only
def test_wrong_image_shape_for_the_architecture(capsys, tmp_path):
    import tensorflow_datasets as tfds

    argv = ["train", *TINY, "--dataset", "cifar10", "--architecture", "mnist_dcgan"]
    argv += ["--batch-size", "4", "--data-dir", os.fspath(tmp_path / "tfds")]
    with tfds.testing.mock_data(num_examples=16):
        fails_cleanly(
            capsys,
            [*argv, "--out", os.fspath(tmp_path / "run")],
            "images have shape (32, 32, 3) but the networks take (28, 28, 1)",
        )


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    capsys, tmp_path, data_dir
):
    out = tmp_path / "run"
    argv = ["train", *TINY, "--method", "sgda", "--lr", "1e8", "--epochs", "3"]
    argv += ["--batch-size", "64", "--checkpoint-every", "1"]
    argv += ["--data-dir", data_dir, "--out", os.fspath(out)]
    err = fails_cleanly(capsys, argv, "became non-finite at iteration")
    stopped_at = int(err.split("non-finite at iteration ")[1].split(";")[0])
    assert 0 < stopped_at < 12
    assert "last good checkpoint is" in err
    assert not (out / "model.keras").exists()
    checkpoint = keras.models.load_model(out / "checkpoint.keras")
    assert int(checkpoint.optimizer.iterations.numpy()) < stopped_at
    assert all(np.isfinite(v.numpy()).all() for v in checkpoint.weights)


@tensorflow_only
def test_strategy_names_match_the_distribute_module():
    from keras_svre import distribute

    assert cli.STRATEGIES == distribute.STRATEGIES


WARM = ["--take", "256", "--width", "4", "--batch-size", "64", "--verbose", "0"]
WARM += ["--method", "svre", "--warm-start-method", "adam", "--warm-start-epochs", "1"]


def _weights(path):
    return [np.asarray(v) for v in keras.models.load_model(path).weights]


@pytest.mark.parametrize(
    "averaging, averaged_iterations",
    [([], 6), (["--no-average-warm-start"], 2)],
)
def test_warm_start_trains_adam_then_svre(
    tmp_path, data_dir, averaging, averaged_iterations
):
    out = tmp_path / "run"
    argv = ["train", *WARM, "--epochs", "2", "--no-evaluate", *averaging]
    assert cli.main([*argv, "--data-dir", data_dir, "--out", os.fspath(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    # 4 batches per epoch: Adam takes one per iteration, SVRE two.
    adam, svre = summary["phases"]
    assert (adam["method"], adam["iterations"], adam["snapshots"]) == ("adam", 4, 0)
    assert adam["minibatch_evaluations"] == 4
    assert (svre["method"], svre["iterations"]) == ("svre", 2)
    assert svre["snapshots"] >= 1
    assert svre["minibatch_evaluations"] == 2 * 4 + 4 * svre["snapshots"]
    assert summary["iterations"] == 6
    model = keras.models.load_model(out / "model.keras")
    assert isinstance(model.optimizer, keras_svre.SVRE)
    # By default the averaged generators include the warm start's iterates;
    # with --no-average-warm-start they restart at the switch.
    assert int(model.average_count.numpy()) == averaged_iterations
    with open(out / "metrics.csv") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]


def _cli_in_a_process(argv):
    """The CLI in a process of its own: `--deterministic` switches TF's op
    determinism on for the whole process (Keras then refuses XLA), which must
    not leak into the other tests."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", "keras_svre", *argv]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_resume_across_the_warm_start_switch_equals_an_uninterrupted_run(
    tmp_path, data_dir
):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    common = [
        "train",
        *WARM,
        *DETERMINISTIC,
        "--no-evaluate",
        "--data-dir",
        data_dir,
    ]
    _cli_in_a_process([*common, "--epochs", "2", "--out", os.fspath(whole)])
    # The first run ends with the warm start; resuming it for longer switches.
    _cli_in_a_process([*common, "--epochs", "1", "--out", os.fspath(parts)])
    first = keras.models.load_model(parts / "model.keras")
    assert isinstance(first.optimizer, keras.optimizers.Adam)
    argv = ["train", "--resume", "--epochs", "2", "--verbose", "0"]
    _cli_in_a_process([*argv, "--data-dir", data_dir, "--out", os.fspath(parts)])
    for a, b in zip(_weights(whole / "model.keras"), _weights(parts / "model.keras")):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--warm-start-method", "svre-vrad"], "steps like --method svre"),
        (["--warm-start-method", "sgd-x"], "unknown --warm-start-method 'sgd-x'"),
        (["--warm-start-epochs", "9", "--epochs", "2"], "cannot exceed it"),
        (["--ema-decay", "1.0"], "--ema-decay must be in [0, 1)"),
    ],
)
def test_bad_warm_start_settings_exit_2(capsys, tmp_path, extra, message):
    argv = ["train", *extra, "--out", os.fspath(tmp_path / "run")]
    fails_cleanly(capsys, argv, message)


def test_auto_warm_start_only_before_svre(tmp_path, data_dir):
    out = tmp_path / "run"
    argv = ["train", *TINY[:-2], "--method", "se", "--steps", "1"]
    assert cli.main([*argv, "--data-dir", data_dir, "--out", os.fspath(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert [p["method"] for p in summary["phases"]] == ["se"]
    assert json.loads((out / "run.json").read_text())["warm_start_method"] is None


def test_sample_draws_the_generator_that_scored_best(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    argv = ["train", *WARM, "--epochs", "1", "--data-dir", data_dir]
    assert cli.main([*argv, "--out", os.fspath(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    evaluation = summary["evaluation"]
    best = max(
        ("ema", "average", "current"), key=lambda w: evaluation[w]["inception_score"]
    )
    assert evaluation["best"] == best
    model = keras.models.load_model(out / "model.keras")
    assert model.default_generator == best
    capsys.readouterr()
    npy = tmp_path / "best.npy"
    argv = ["sample", "--model", os.fspath(out / "model.keras"), "--num", "6"]
    assert cli.main([*argv, "--out", os.fspath(npy)]) == 0
    assert (
        f"from the {best} generator (the model's default: the generator that scored best"
        in capsys.readouterr().out
    )
    expected = (model.generate(6, which=best, seed=0) + 1.0) / 2.0
    np.testing.assert_allclose(np.load(npy), np.clip(expected, 0, 1), atol=1e-6)


# The default run (`keras-svre train` with its defaults: SGDA-Adam warm start,
# then SVRE-VRAd; the final evaluation; TensorBoard), made tiny.
DEFAULT_TINY = ["--take", "256", "--batch-size", "32", "--width", "2"]
DEFAULT_TINY += ["--epochs", "2", "--warm-start-epochs", "1", "--verbose", "0"]


def test_the_default_run_evaluates_saves_logs_and_samples(tmp_path, data_dir, capsys):
    out = tmp_path / "run"
    argv = ["train", *DEFAULT_TINY, "--data-dir", data_dir, "--out", os.fspath(out)]
    assert cli.main(argv) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["backend"] == BACKEND
    assert [p["method"] for p in summary["phases"]] == ["adam", "svre-vrad"]
    evaluation = summary["evaluation"]
    for which in ("ema", "average", "current"):
        assert evaluation[which]["inception_score"] >= 1.0
        assert np.isfinite(evaluation[which]["fid"])
    assert evaluation["best"] in ("ema", "average", "current")
    model = keras.models.load_model(out / "model.keras")
    assert model.default_generator == evaluation["best"]
    # TensorBoard: the losses and counts, the final evaluation and the sample
    # grids, at the run's iterations (8 Adam, then 4 SVRE iterations).
    events = tensorboard_helpers.events(out / "tensorboard")
    last = summary["iterations"]
    assert last == 12
    assert events["iterations"][last] == ("scalars", float(last))
    assert events["fid_ema"][last][1] == pytest.approx(evaluation["ema"]["fid"])
    assert sorted(events["samples/ema"]) == [8, 12]
    plugin, (height, width, png) = events["samples/ema"][last]
    assert plugin == "images" and tensorboard_helpers.png_shape(png) == (
        height,
        width,
    )
    capsys.readouterr()
    npy = tmp_path / "digits.npy"
    argv = ["sample", "--model", os.fspath(out / "model.keras"), "--num", "4"]
    assert cli.main([*argv, "--out", os.fspath(npy)]) == 0
    assert (
        f"from the {evaluation['best']} generator (the model's default: the "
        "generator that scored best in the evaluation before it was saved)"
        in capsys.readouterr().out
    )
    assert np.load(npy).shape == (4, 28, 28, 1)


def test_a_failure_in_training_saves_the_latest_state_and_names_the_phase(
    tmp_path, data_dir, monkeypatch
):
    """A crash in the SVRE phase's second epoch: its first epoch is saved."""
    from keras_svre import callbacks, run

    original = callbacks.SampleGrid.on_epoch_end

    def fails_in_the_third_epoch(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("the disk is full")
        return original(self, epoch, logs)

    monkeypatch.setattr(callbacks.SampleGrid, "on_epoch_end", fails_in_the_third_epoch)
    out = tmp_path / "run"
    argv = ["train", *DEFAULT_TINY[:6], "--epochs", "3", "--warm-start-epochs", "1"]
    argv += ["--verbose", "0", "--no-evaluate", "--data-dir", data_dir]
    with pytest.raises(run.TrainingError) as raised:
        cli.main([*argv, "--out", os.fspath(out)])
    message = str(raised.value)
    # 8 Adam iterations, then 4 SVRE iterations an epoch.
    assert message.startswith(
        "the svre-vrad phase (2 of 2) failed at iteration 16 with RuntimeError: the "
        "disk is full (the latest state (iteration 16) is saved in "
    )
    assert "continue with `keras-svre train --resume" in message
    saved = keras.models.load_model(out / "checkpoint.keras")
    assert isinstance(saved.optimizer, keras_svre.SVRE) and saved.iterations == 8
    assert not (out / "model.keras").exists()


def test_a_failed_final_evaluation_keeps_the_trained_state(
    tmp_path, data_dir, monkeypatch
):
    from keras_svre import metrics, run

    def broken(*args, **kwargs):
        raise ValueError("no classifier today")

    monkeypatch.setattr(metrics, "evaluate_images", broken)
    out = tmp_path / "run"
    argv = ["train", *TINY[:-2], "--method", "adam", "--steps", "2"]
    argv += ["--batch-size", "64", "--data-dir", data_dir, "--out", os.fspath(out)]
    argv = [a for a in argv if a != "--no-evaluate"]
    with pytest.raises(run.TrainingError) as raised:
        cli.main(argv)
    assert str(raised.value).startswith(
        "the final evaluation (training had finished) failed at iteration 2 with "
        "ValueError: no classifier today (the latest state (iteration 2) is saved "
    )
    saved = keras.models.load_model(out / "checkpoint.keras")
    assert saved.iterations == 2
