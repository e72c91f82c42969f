"""The run settings on the command line (flags made from `RunConfig`'s fields,
the README's table of them, settings files), and the cases that must stop in
one sentence, exit code 2, before anything trains or touches the run folder."""

import fcntl
import json
import os
import re
import shlex
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_svre import cli
from keras_svre.cli import rundir
from keras_svre.cli import settings as cli_settings
from keras_svre.run import RunConfig, settings
from tests.cli_helpers import TINY, fails_cleanly

README = Path(__file__).resolve().parents[1] / "README.md"


def _train_parser():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    return subparsers.choices["train"]


def _train_flags() -> set:
    flags = set()
    for action in _train_parser()._actions:
        flags.update(s for s in action.option_strings if s.startswith("--"))
    return flags - {"--help"}


def _readme_option_rows():
    """The rows of the README's tables whose first cell names `--flags`:
    `(flags, default or None, row)`."""
    rows = []
    for line in README.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("| `--") or len(cells) < 2:
            continue
        flags = re.findall(r"--[a-z0-9][a-z0-9-]*", cells[0])
        default = cells[1] if len(cells) == 3 else None
        rows.append((flags, default, line))
    return rows


def test_every_readme_flag_is_a_train_flag_and_every_train_flag_is_in_the_readme():
    flags = _train_flags()
    listed = {f for row_flags, _, _ in _readme_option_rows() for f in row_flags}
    # The README's other tables name flags of `train` too (--method ogda ...).
    assert listed - flags == set(), "flags the README lists that train lacks"
    assert flags - listed == set(), "train flags the README's tables leave out"


def _readme_default(text):
    if len(text) > 2 and text[0] == text[-1] == "`":
        return text.strip("`")
    if text in ("on", "off"):
        return text == "on"
    try:
        return float(text)
    except ValueError:
        return None  # words ("per method", "1/n"): not a value to compare


def test_the_readme_defaults_are_runconfigs():
    """Each run setting's default in the README's table is RunConfig's."""
    defaults = RunConfig()
    compared = 0
    for flags, default, line in _readme_option_rows():
        if default is None:
            continue
        names = [f[2:].replace("-", "_") for f in flags if not f.startswith("--no-")]
        values = [v.strip() for v in default.split(",")]
        if len(values) != len(names):
            continue
        for name, text in zip(names, values):
            expected = _readme_default(text)
            if name not in settings.SPECS or expected is None:
                continue
            actual = getattr(defaults, name)
            # "off" is how the table says an optional setting is not set.
            assert actual == expected or (actual is None and expected is False), line
            compared += 1
    assert compared >= 15


def test_every_flagged_setting_is_an_argument_with_its_spec():
    parser = _train_parser()
    by_dest = {a.dest: a for a in parser._actions}
    for name, spec in settings.SPECS.items():
        flag = settings.flag(name)
        if flag is None:
            assert name not in by_dest
            continue
        action = by_dest[name]
        assert flag in action.option_strings
        if spec.kind is not bool:
            assert action.type is spec.kind
        assert action.choices == spec.choices or spec.kind is bool


def test_only_the_given_settings_are_in_the_namespace():
    args = _train_parser().parse_args(["--width", "3", "--no-batch-norm"])
    assert cli_settings.given(args) == {"width": 3, "batch_norm": False}


# ---------------------------------------------------------------------- #
# One sentence, exit 2, and no run folder.
# ---------------------------------------------------------------------- #
def _refused(capsys, tmp_path, argv, message):
    out = tmp_path / "run"
    err = fails_cleanly(capsys, ["train", *argv, "--out", os.fspath(out)], message)
    assert not out.exists(), "a refused run must not create its folder"
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    "line, message",
    [
        ('width = "two"', "`width` in {file} must be an integer; received 'two'"),
        ('lr = "1e-3"', "`lr` in {file} must be a number; received '1e-3'"),
        ("batch_norm = 1", "`batch_norm` in {file} must be true or false"),
        ("epochs = 0", "`epochs` in {file} must be at least 1; received 0"),
    ],
)
@pytest.mark.parametrize("flag", [[], ["--width", "2"]])
def test_a_wrong_value_in_a_config_file_names_its_key(
    capsys, tmp_path, line, message, flag
):
    config = tmp_path / "cfg.toml"
    config.write_text(line + "\n")
    message = message.format(file=config)
    _refused(capsys, tmp_path, ["--config", os.fspath(config), *flag], message)


def test_a_json_config_error_names_the_key_too(capsys, tmp_path):
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"seed": -1}))
    _refused(capsys, tmp_path, ["--config", os.fspath(config)], f"`seed` in {config}")


def test_a_rule_broken_by_a_flag_names_the_flag(capsys, tmp_path):
    config = tmp_path / "cfg.toml"
    config.write_text("epochs = 4\n")
    argv = ["--config", os.fspath(config), "--warm-start-epochs", "6"]
    _refused(
        capsys,
        tmp_path,
        argv,
        f"--warm-start-epochs (6) is part of `epochs` in {config} (4)",
    )


def test_a_config_file_that_is_not_json_or_toml(capsys, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("width: 2\n")
    err = _refused(capsys, tmp_path, ["--config", os.fspath(config)], "--config")
    assert "JSON (.json) or TOML (.toml)" in err


@pytest.mark.parametrize("p", ["2", "0", "-0.5", "nan"])
def test_a_restart_probability_outside_0_1_is_refused_before_the_warm_start(
    capsys, tmp_path, p
):
    # The default run warm-starts with Adam; SVRE would take p only after it.
    argv = ["--restart-probability", p]
    message = "--restart-probability must be"
    err = _refused(capsys, tmp_path, argv, message)
    assert "in (0, 1]" in err or "finite" in err


def test_evaluate_every_on_a_folder_says_why(capsys, tmp_path):
    images = tmp_path / "digits"
    images.mkdir()
    argv = ["--dataset", f"folder:{images}", "--evaluate-every", "1"]
    err = _refused(capsys, tmp_path, argv, "a folder of your own images")
    assert "28x28" not in err


def test_a_gradient_penalty_with_batch_norm_is_refused(capsys, tmp_path, data_dir):
    argv = [*TINY, "--method", "adam", "--gradient-penalty", "r1"]
    err = _refused(capsys, tmp_path, [*argv, "--data-dir", data_dir], "batch norm")
    assert "--gradient-penalty r1 needs a discriminator without" in err
    assert "--batch-norm" in err


# ---------------------------------------------------------------------- #
# The run folder's lock.
# ---------------------------------------------------------------------- #
def test_a_second_train_on_a_locked_folder_gets_one_sentence(
    capsys, tmp_path, data_dir
):
    out = tmp_path / "run"
    out.mkdir()
    # What a first `keras-svre train` on the folder holds while it runs.
    with open(out / rundir.LOCK_FILE, "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        argv = ["train", *TINY, "--steps", "1", "--batch-size", "64"]
        argv += ["--data-dir", data_dir, "--out", os.fspath(out)]
        err = fails_cleanly(capsys, argv, "another keras-svre train is writing to")
        assert len(err.strip().splitlines()) == 1
    assert not (out / "run.json").exists()
    # Released (as when the first process ends): the folder is usable again.
    assert cli.main(argv) == 0
    assert (out / "model.keras").exists()


# ---------------------------------------------------------------------- #
# sample and export.
# ---------------------------------------------------------------------- #
@pytest.fixture
def archive(tmp_path):
    """A zip file named like a model (these checks come before loading it)."""
    path = tmp_path / "M.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", "{}")
    return path


def test_export_refuses_to_write_the_generator_over_its_gan(capsys, archive):
    before = archive.read_bytes()
    argv = ["export", "--model", os.fspath(archive), "--out", os.fspath(archive)]
    fails_cleanly(capsys, [*argv, "--overwrite"], "is the --model file itself")
    assert archive.read_bytes() == before


@pytest.mark.parametrize("command", ["sample", "export"])
def test_a_truncated_model_is_reported_as_corrupt(capsys, tmp_path, archive, command):
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    argv = [command, "--model", os.fspath(archive)]
    out = "x.npy" if command == "sample" else "g.keras"
    err = fails_cleanly(capsys, [*argv, "--out", os.fspath(tmp_path / out)], "corrupt")
    assert "not found" not in err.lower() and "no such" not in err


@pytest.mark.parametrize("option, name", [("--out", "x.npy"), ("--grid", "x.png")])
def test_sample_refuses_an_existing_file_without_overwrite(
    capsys, tmp_path, archive, option, name
):
    existing = tmp_path / name
    existing.write_bytes(b"earlier")
    argv = ["sample", "--model", os.fspath(archive), option, os.fspath(existing)]
    err = fails_cleanly(capsys, argv, f"{option} {existing} already exists")
    assert "--overwrite" in err
    assert existing.read_bytes() == b"earlier"
    # With --overwrite the check passes (the fake model then fails to load).
    fails_cleanly(capsys, [*argv, "--overwrite"], "could not load")


# ---------------------------------------------------------------------- #
# --gradient-noise-every N: a measurement every N iterations.
# ---------------------------------------------------------------------- #
def _scalar_steps(log_dir, prefix) -> dict:
    steps = {}
    for path in Path(log_dir).rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag.startswith(prefix):
                    steps.setdefault(value.tag, []).append(event.step)
    return {tag: sorted(s) for tag, s in steps.items()}


def test_gradient_noise_is_measured_every_n_iterations(tmp_path, data_dir):
    out = tmp_path / "run"
    # 256 examples in batches of 32: 8 SGDA iterations in the one epoch.
    argv = ["train", *TINY, "--method", "sgda", "--batch-size", "32"]
    argv += ["--steps", "6", "--gradient-noise-every", "2"]
    assert cli.main([*argv, "--data-dir", data_dir, "--out", os.fspath(out)]) == 0
    steps = _scalar_steps(out / "tensorboard", "grad_")
    assert set(steps) == {
        "grad_second_moment_generator",
        "grad_second_moment_discriminator",
        "grad_variance_generator",
        "grad_variance_discriminator",
    }
    for tag_steps in steps.values():
        assert tag_steps == [2, 4, 6]


# ---------------------------------------------------------------------- #
# The README's commands.
# ---------------------------------------------------------------------- #
def _readme_commands(program="keras-svre"):
    """Each `keras-svre ...` command in the README's code blocks, as argv."""
    commands, in_code, pending = [], False, ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not in_code:
            continue
        line = pending + line.split("#")[0].strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        words = shlex.split(line.replace("&&", " && "))
        for start, word in enumerate(words):
            if word == program:
                end = words.index("&&", start) if "&&" in words[start:] else len(words)
                commands.append(words[start + 1 : end])
    return commands


def test_the_readme_shows_train_commands():
    trains = [c for c in _readme_commands() if c and c[0] == "train"]
    assert ["train"] in trains
    assert any(c[1:3] == ["--preset", "cifar10-svre-ws"] for c in trains)
    assert len(trains) >= 6


def test_every_readme_train_command_passes_every_check(tmp_path, monkeypatch):
    """Each `keras-svre train` of the README builds its run settings as written
    (the checks that run before the data is read)."""
    monkeypatch.chdir(tmp_path)
    # The files the README's commands read.
    Path("my_settings.toml").write_text('method = "se-a"\nwidth = 4\n')
    previous = Path("runs/earlier")
    previous.mkdir(parents=True)
    (previous / "run.json").write_text(json.dumps(RunConfig(width=4).to_dict()))
    os.symlink("earlier", "runs/latest")
    parser = cli.build_parser()
    for argv in _readme_commands():
        if argv[0] != "train":
            continue
        args = parser.parse_args(argv)
        cli.train.check_options(args)
        folder = rundir.choose(args.out, args.resume, args.overwrite)
        config = cli_settings.run_config(args, folder)
        assert isinstance(config, RunConfig), argv


def _images_like(shape, count):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (count, *shape), dtype=np.uint8)


@pytest.mark.slow
def test_the_readme_preset_example_runs_as_written(tmp_path):
    """`keras-svre train --preset cifar10-svre-ws --epochs 2 --warm-start-epochs 1
    --take 512` on TFDS' mock CIFAR-10, at a small width and a few steps."""
    (preset,) = [c for c in _readme_commands() if "--preset" in c and "cifar10" in c[2]]
    small = ["--width", "2", "--steps", "2", "--no-evaluate", "--verbose", "0"]
    out = tmp_path / "run"
    argv = [*preset, *small, "--data-dir", os.fspath(tmp_path / "tfds")]
    with tfds.testing.mock_data(num_examples=512):
        assert cli.main([*argv, "--out", os.fspath(out)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["iterations"] == 2
    assert [p["method"] for p in summary["phases"]] == ["se-a"]


@pytest.mark.slow
def test_the_readme_alternating_example_runs(tmp_path, data_dir):
    (command,) = [c for c in _readme_commands() if "--n-dis" in c]
    small = ["--take", "256", "--batch-size", "32", "--width", "2", "--steps", "1"]
    small += ["--no-evaluate", "--verbose", "0", "--data-dir", data_dir]
    assert cli.main([*command, *small, "--out", os.fspath(tmp_path / "run")]) == 0


@pytest.mark.slow
def test_the_readme_sample_and_export_commands_run(tmp_path, monkeypatch, data_dir):
    """Every `keras-svre sample` / `export` of the README, as written but for
    fewer images, on a tiny run standing in for the README's runs."""
    monkeypatch.chdir(tmp_path)
    run = Path("runs/mnist-vrad")
    argv = ["train", *TINY, "--steps", "1", "--batch-size", "64"]
    assert cli.main([*argv, "--data-dir", data_dir, "--out", os.fspath(run)]) == 0
    (run / "best.keras").write_bytes((run / "model.keras").read_bytes())
    os.symlink("mnist-vrad", "runs/latest")
    commands = [c for c in _readme_commands() if c[0] in ("sample", "export")]
    assert len(commands) >= 5
    for command in commands:
        if "--num" in command:
            command[command.index("--num") + 1] = "8"
        # Two examples write the same SavedModel folder: each runs on its own.
        shutil.rmtree("generator_savedmodel", ignore_errors=True)
        assert cli.main(command) == 0, command
    assert Path("best.png").stat().st_size > 0
    assert len(list(Path("pngs").glob("*.png"))) == 8
    assert Path("generator.keras").is_file()
    assert Path("generator_savedmodel/saved_model.pb").is_file()
