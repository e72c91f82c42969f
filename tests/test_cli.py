"""The `keras-svre` command line: train, sample, and bad input (exit 2, no traceback)."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

import keras_svre
from keras_svre import cli, data

TINY = ["--take", "256", "--width", "4", "--no-evaluate", "--verbose", "0"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds")
    data.prepare(data_dir=directory)
    return os.fspath(directory)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A two-iteration SVRE run (one epoch of 4 batches of 64)."""
    out = tmp_path_factory.mktemp("run")
    argv = ["train", *TINY, "--steps", "2", "--batch-size", "64"]
    argv += ["--data-dir", data_dir, "--out", os.fspath(out)]
    assert cli.main(argv) == 0
    return out


def _fails_cleanly(capsys, argv, message):
    """Runs the CLI; checks exit code 2, one clear message, no traceback."""
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    return err


def test_train_leaves_samples_metrics_and_model(trained):
    assert (trained / "samples_epoch_001.png").stat().st_size > 0
    with open(trained / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and {"generator_loss", "discriminator_loss"} <= set(rows[0])
    summary = json.loads((trained / "metrics.json").read_text())
    assert summary["iterations"] == 2
    assert summary["minibatch_evaluations"] == 8
    assert summary["snapshots"][0] >= 1
    assert np.isfinite(summary["final_losses"]["generator_loss"])
    model = keras.models.load_model(trained / "model.keras")
    assert isinstance(model, keras_svre.GAN)
    assert isinstance(model.optimizer, keras_svre.SVRE)
    # The SVRE default: one snapshot per pass on average (n = 4 batches).
    assert model.optimizer.restart_probability == pytest.approx(0.25)
    run = json.loads((trained / "run.json").read_text())
    assert run["method"] == "svre" and run["steps"] == 2
    assert not list(trained.glob(".partial-*"))


def test_sample_writes_images_in_the_unit_range(trained, tmp_path, capsys):
    out = tmp_path / "samples" / "images.npy"
    argv = ["sample", "--model", os.fspath(trained / "model.keras")]
    assert cli.main([*argv, "--num", "5", "--out", os.fspath(out)]) == 0
    images = np.load(out)
    assert images.shape == (5, 28, 28, 1) and images.dtype == np.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert images.std() > 0
    assert "wrote 5 images" in capsys.readouterr().out


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
    _fails_cleanly(capsys, argv, message)


def test_unknown_strategy_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--strategy", "horovod"])
    assert exit_info.value.code == cli.EXIT_USAGE
    assert "invalid choice: 'horovod'" in capsys.readouterr().err


def test_multiworker_needs_tf_config(capsys, monkeypatch, tmp_path, data_dir):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    argv = ["train", *TINY, "--strategy", "multiworker", "--out", os.fspath(tmp_path)]
    _fails_cleanly(capsys, [*argv, "--data-dir", data_dir], "TF_CONFIG")


def test_resume_needs_a_run(capsys, tmp_path):
    argv = ["train", "--resume", "--out", os.fspath(tmp_path)]
    _fails_cleanly(capsys, argv, "nothing to resume")


def test_resume_refuses_other_settings(capsys, trained, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text((trained / "run.json").read_text())
    argv = ["train", "--resume", "--out", os.fspath(out), "--method", "sgda"]
    err = _fails_cleanly(capsys, argv, "--method sgda (the run has svre)")
    assert "continues a run with its own settings" in err


def test_wrong_image_shape_for_the_architecture(capsys, tmp_path):
    argv = ["train", *TINY, "--dataset", "cifar10", "--architecture", "mnist_dcgan"]
    argv += ["--batch-size", "4", "--data-dir", os.fspath(tmp_path / "tfds")]
    with tfds.testing.mock_data(num_examples=16):
        _fails_cleanly(
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
    err = _fails_cleanly(capsys, argv, "became non-finite at iteration")
    stopped_at = int(err.split("non-finite at iteration ")[1].split(";")[0])
    assert 0 < stopped_at < 12
    assert "last good checkpoint is" in err
    assert not (out / "model.keras").exists()
    checkpoint = keras.models.load_model(out / "checkpoint.keras")
    assert int(checkpoint.optimizer.iterations.numpy()) < stopped_at
    assert all(np.isfinite(v.numpy()).all() for v in checkpoint.weights)


def test_strategy_names_match_the_distribute_module():
    from keras_svre import distribute

    assert cli.STRATEGIES == distribute.STRATEGIES
