"""The run settings on the command line: one flag per `RunConfig` field, made
from its spec, and the layers a run's settings come from.

The settings of a run are, in this order: `RunConfig`'s defaults, then
`--preset`, then `--config FILE`, then the flags given. Every check is
`RunConfig`'s; an error names a setting as the user gave it: a flag as the
flag (`--width`), a key of the settings file as that key (`` `width` in
cfg.toml ``).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

from keras_svre.cli import rundir
from keras_svre.cli.common import UsageError


def _specs():
    # Importing keras_svre.run registers RunConfig's specs.
    from keras_svre.run import settings

    return settings.SPECS


def add_run_settings(parser: argparse.ArgumentParser) -> None:
    """One argument per run setting that has a flag, from its spec.

    The arguments have no default (`argparse.SUPPRESS`): the parsed namespace
    holds the settings given, and nothing else of them (`given`).
    """
    from keras_svre.run import RunConfig, settings

    specs = _specs()
    group = parser.add_argument_group(
        "run settings",
        "the settings of keras_svre.run.RunConfig (also the keys of a --config file)",
    )
    for field in dataclasses.fields(RunConfig):
        spec = specs[field.name]
        flag = settings.flag(field.name)
        if flag is None:
            continue
        shown = spec.default_help
        if shown is None:
            shown = _shown_default(field.default)
        options = {
            "dest": field.name,
            "default": argparse.SUPPRESS,
            "help": f"{spec.help_text()} (default: {shown})".lstrip(),
        }
        if spec.kind is bool:
            options["action"] = argparse.BooleanOptionalAction
        else:
            options["type"] = spec.kind
            if spec.metavar is not None:
                options["metavar"] = spec.metavar
            if spec.choices is not None:
                options["choices"] = spec.choices
        group.add_argument(flag, **options)


def _shown_default(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def given(args) -> dict:
    """The run settings given on the command line."""
    specs = _specs()
    return {k: v for k, v in vars(args).items() if k in specs}


def setting_names() -> set[str]:
    return set(_specs())


class Sources:
    """Where each setting of a run came from, to name it in an error."""

    def __init__(self, explicit=(), file=None, file_keys=()):
        self.explicit = set(explicit)
        self.file = file
        self.file_keys = set(file_keys)

    def spell(self, name: str) -> str:
        from keras_svre.run import settings

        flag = settings.flag(name)
        if name in self.file_keys and name not in self.explicit:
            return f"`{name}` in {self.file}"
        return flag or f"`{name}`"


def run_config(args, out):
    """The run's configuration: defaults < --preset < --config < flags given.

    With `--resume`, the run's own settings (its `run.json`); flags given
    must agree with them, except the run's length (`--epochs`, `--steps`).
    """
    from keras_svre import presets, run

    explicit = given(args)
    if args.resume:
        return _resumed_config(out, explicit)
    config = run.RunConfig()
    if args.preset is not None:
        try:
            config = presets.get(args.preset)
        except ValueError as e:
            raise UsageError(str(e)) from None
    from_file = {}
    if args.config is not None:
        from_file = config_file(args.config)
    sources = Sources(explicit, args.config, from_file)
    try:
        return config.replace(**{**from_file, **explicit})
    except run.ConfigError as e:
        raise UsageError(e.render(sources.spell)) from None


def _resumed_config(out, explicit):
    from keras_svre import run

    path = out / "run.json"
    recorded = rundir.recorded_settings(out, setting_names())
    try:
        has = run.RunConfig.from_dict(recorded)
    except run.ConfigError as e:
        raise UsageError(e.render(Sources((), path, recorded).spell)) from None
    try:
        wanted = has.replace(**explicit)
    except run.ConfigError as e:
        raise UsageError(e.with_flag_names()) from None
    before, asked = has.to_dict(), wanted.to_dict()
    conflicts = [
        f"--{key.replace('_', '-')} {value} (the run has {before[key]})"
        for key, value in explicit.items()
        if key not in run.LENGTH_SETTINGS and asked[key] != before[key]
    ]
    if conflicts:
        raise UsageError(
            "--resume continues a run with its own settings; these "
            "differ: " + ", ".join(conflicts)
        )
    return wanted


def config_file(path) -> dict:
    """`--config FILE`'s settings (JSON or TOML; a run's run.json is one), each
    checked on its own: a wrong value in the file is an error even where a flag
    overrides it."""
    from keras_svre import run
    from keras_svre.run import settings

    path = pathlib.Path(path)
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    if path.suffix.lower() not in settings.SETTINGS_FILE_SUFFIXES:
        raise UsageError(
            f"--config {path}: a settings file is JSON (.json) or TOML (.toml); "
            f"write the settings in one of them"
        )
    try:
        values = run.read_settings(path)
    except (ValueError, OSError) as e:
        raise UsageError(f"--config {path} cannot be read: {e}") from None
    # A run's run.json says which backend trained it; that is no setting.
    values.pop(rundir.BACKEND_KEY, None)
    specs = _specs()
    unknown = sorted(set(values) - set(specs))
    if unknown:
        raise UsageError(
            f"--config {path}: unknown setting(s) {', '.join(unknown)}; the "
            f"settings are {', '.join(specs)}"
        )
    spell = Sources((), path, values).spell
    for name, value in values.items():
        try:
            settings.check_value(name, value)
        except run.ConfigError as e:
            raise UsageError(e.render(spell)) from None
    return values
