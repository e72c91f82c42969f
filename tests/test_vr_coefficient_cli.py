"""`vr_coefficient` as a run setting (`RunConfig`) and the `--vr-coefficient` flag."""

import json
import os

import keras
import pytest

import keras_svre
from keras_svre import cli
from keras_svre.run import ConfigError, RunConfig
from tests.cli_helpers import TINY, fails_cleanly

REDUCED = "svre, svre-vrad, svre-opt, svre-vrad-opt"


@pytest.mark.parametrize(
    "given, stored", [(0.5, 0.5), (0, 0.0), ("0.25", 0.25), ("Optimal", "optimal")]
)
def test_setting_reaches_the_optimizer(given, stored):
    config = RunConfig(method="svre", vr_coefficient=given, warm_start_method=None)
    assert config.vr_coefficient == stored
    assert RunConfig.from_dict(config.to_dict()) == config
    (phase,) = config.phases(batches_per_epoch=10)
    optimizer = config.compile_arguments(phase)["optimizer"]
    assert optimizer.vr_coefficient == stored


def test_the_methods_own_coefficient_by_default():
    config = RunConfig(method="svre-vrad-opt")
    warm, main = config.phases(batches_per_epoch=10)
    # The warm start (Adam) takes no coefficient; the method its own.
    assert warm.method.name == "adam"
    assert not hasattr(config.compile_arguments(warm)["optimizer"], "vr_coefficient")
    optimizer = config.compile_arguments(main)["optimizer"]
    assert (optimizer.adaptive, optimizer.vr_coefficient) == ("adam", "optimal")
    assert RunConfig(method="svre-opt", vr_coefficient="optimal").vr_coefficient == (
        "optimal"
    )


@pytest.mark.parametrize(
    "settings, message, flags",
    [
        (
            {"method": "svre", "vr_coefficient": -1.0},
            "`vr_coefficient` must be a finite number >= 0 or optimal; received -1.0",
            "--vr-coefficient must be",
        ),
        (
            {"method": "svre", "vr_coefficient": float("inf")},
            "`vr_coefficient` must be a finite number >= 0 or optimal; received inf",
            "--vr-coefficient must be",
        ),
        (
            {"method": "svre", "vr_coefficient": "best"},
            "`vr_coefficient` must be a finite number >= 0 or optimal; received 'best'",
            "--vr-coefficient must be",
        ),
        (
            {"method": "se-a", "vr_coefficient": 0.5},
            f"`vr_coefficient` applies to variance-reduced methods ({REDUCED}); "
            "`method` se-a has none",
            "--vr-coefficient applies to variance-reduced methods "
            f"({REDUCED}); --method se-a has none",
        ),
        (
            {"method": "svre-opt", "vr_coefficient": 0.5},
            "`method` svre-opt has `vr_coefficient` optimal; received 0.5",
            "--method svre-opt has --vr-coefficient optimal; received 0.5",
        ),
    ],
)
def test_invalid_settings_say_the_rule(settings, message, flags):
    with pytest.raises(ConfigError) as info:
        RunConfig(**settings)
    assert message in str(info.value)
    assert flags in info.value.with_flag_names()


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--method", "se-a", "--vr-coefficient", "0.5"],
            "--vr-coefficient applies to variance-reduced methods "
            f"({REDUCED}); --method se-a has none",
        ),
        (
            ["--vr-coefficient", "-1"],
            "--vr-coefficient must be a finite number >= 0 or optimal; received '-1'",
        ),
        (
            ["--vr-coefficient", "nan"],
            "--vr-coefficient must be a finite number >= 0 or optimal; received 'nan'",
        ),
        (
            ["--vr-coefficient", "best"],
            "--vr-coefficient must be a finite number >= 0 or optimal; received 'best'",
        ),
    ],
)
def test_bad_flag_exits_2(capsys, argv, message):
    fails_cleanly(capsys, ["train", *TINY, *argv], message)


def test_flag_trains_with_the_optimal_coefficient(data_dir, tmp_path):
    out = tmp_path / "run"
    argv = ["train", *TINY, "--vr-coefficient", "optimal", "--steps", "2"]
    argv += ["--batch-size", "64", "--data-dir", data_dir, "--out", os.fspath(out)]
    assert cli.main(argv) == 0
    assert json.loads((out / "run.json").read_text())["vr_coefficient"] == "optimal"
    model = keras.models.load_model(out / "model.keras")
    assert isinstance(model.optimizer, keras_svre.SVRE)
    assert model.optimizer.vr_coefficient == "optimal"
    # The two iterations recorded statistics (the run's only snapshot, which
    # resets them, came before them).
    assert json.loads((out / "metrics.json").read_text())["snapshots"] == 1
    statistics = model.optimizer._variances
    assert statistics and any(float(s.numpy()) > 0 for s in statistics)
