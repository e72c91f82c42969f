"""How a run setting is declared, checked and named.

Each field of `keras_svre.run.RunConfig` is declared with `setting(...)`: its
default, its type, the range its values take, its help text and its flag on
the command line. From that one declaration follow the type and range checks
(`check_value`), the `keras-svre train` argument (`keras_svre.cli.settings`),
and the way an error names the setting (`ConfigError.render`): as a flag
(`--batch-size`), as a key of a settings file, or as a Python argument.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable

# The settings' specs, by name, in declaration order (`register` fills it).
SPECS: dict[str, Spec] = {}

_KIND_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
}


@dataclasses.dataclass(frozen=True)
class Spec:
    """What a run setting is: its type, range, help and command-line flag.

    Attributes:
        kind: `int`, `float`, `str` or `bool`. A float setting also takes
            an integer (stored as a float); no setting takes a bool for a
            number.
        help: The flag's help text (a string, or a function that returns
            one, for help that lists a registry's names).
        optional: Whether `None` is a value ("not set").
        low, high: The range of a number (`None`: unbounded).
        low_open, high_open: Whether the range excludes `low` / `high`.
        choices: The values the command line takes (argparse `choices`).
        metavar: The flag's placeholder in the help.
        flag: The flag's name without dashes (default: the name with `-`
            for `_`); `None`: a setting of settings files and Python only.
        default_help: What the help says of the default, where the
            default is `None` and means something ("per method").
        rule: The rule in words ("a positive integer"), for a setting
            whose errors say so rather than its type and range apart.
        any_kind: Whether values of other kinds than `kind` are taken too
            (`vr_coefficient`: a number or "optimal"; the command line gives
            its text): `RunConfig`'s own `_check_*` checks and converts them.
    """

    kind: type
    help: str | Callable[[], str] = ""
    optional: bool = False
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    metavar: str | None = None
    flag: str | None = ""
    default_help: str | None = None
    rule: str | None = None
    any_kind: bool = False

    def help_text(self) -> str:
        return self.help() if callable(self.help) else self.help

    def range_text(self) -> str | None:
        """The rule a number must follow, in words (`None`: any number)."""
        if self.low is None and self.high is None:
            return None
        if self.high is None:
            if self.low_open:
                return "positive" if self.low == 0 else f"greater than {self.low:g}"
            return f"at least {self.low:g}"
        if self.low is None:
            return f"{'below' if self.high_open else 'at most'} {self.high:g}"
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"

    def in_range(self, value) -> bool:
        if self.low is not None:
            if not (value > self.low if self.low_open else value >= self.low):
                return False
        if self.high is not None:
            if not (value < self.high if self.high_open else value <= self.high):
                return False
        return True


def setting(default, kind, help="", **options) -> dataclasses.Field:
    """A `RunConfig` field: its default and its `Spec` (see there)."""
    spec = Spec(kind, help, **options)
    return dataclasses.field(default=default, metadata={"spec": spec})


def register(cls):
    """Class decorator: records the settings' specs of a dataclass in `SPECS`."""
    for field in dataclasses.fields(cls):
        SPECS[field.name] = field.metadata["spec"]
    return cls


def flag(name: str) -> str | None:
    """The command-line flag of a setting (`--batch-size`), or `None`."""
    spec = SPECS[name]
    if spec.flag is None:
        return None
    return "--" + (spec.flag or name.replace("_", "-"))


class ConfigError(ValueError):
    """A run setting that breaks a rule.

    `setting` names it. The message template names settings as `{name}`
    (`{setting}` is this one): the message spells them as settings
    (`batch_size`), `with_flag_names()` as the command line's flags
    (`--batch-size`), and `render(spell)` as `spell(name)` says.
    """

    def __init__(self, setting: str, template: str):
        self.setting = setting
        self._template = template.replace("{setting}", "{" + setting + "}")
        super().__init__(self.render(lambda name: f"`{name}`"))

    def settings(self) -> list[str]:
        """The settings the message names, in order."""
        return [m for m in re.findall(r"\{(\w+)\}", self._template) if m in SPECS]

    def render(self, spell: Callable[[str], str]) -> str:
        """The message with each setting spelled as `spell(name)`."""

        def name(match):
            return spell(match[1]) if match[1] in SPECS else match[0]

        return re.sub(r"\{(\w+)\}", name, self._template)

    def with_flag_names(self) -> str:
        """The message with the settings spelled as command-line flags."""
        return self.render(lambda name: flag(name) or f"`{name}`")


def check_value(name: str, value):
    """`value` as setting `name` keeps it; `ConfigError` if its type or range is
    wrong."""
    spec = SPECS[name]
    if value is None:
        if spec.optional:
            return None
        raise ConfigError(
            name, f"{{setting}} must be {_KIND_NAMES[spec.kind]}, not None"
        )
    if spec.any_kind:
        return value
    if spec.rule is not None and not (
        _has_kind(value, spec.kind) and _finite(value) and spec.in_range(value)
    ):
        raise ConfigError(name, f"{{setting}} must be {spec.rule}; received {value!r}")
    if not _has_kind(value, spec.kind):
        raise ConfigError(
            name,
            f"{{setting}} must be {_KIND_NAMES[spec.kind]}; received {value!r} "
            f"({_kind_of(value)})",
        )
    if spec.kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(name, f"{{setting}} must be finite; received {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(
            name,
            f"unknown {{setting}} {value!r}; choose one of "
            f"{', '.join(map(str, spec.choices))}",
        )
    if spec.kind in (int, float) and not spec.in_range(value):
        raise ConfigError(
            name, f"{{setting}} must be {spec.range_text()}; received {value!r}"
        )
    return value


def _finite(value) -> bool:
    return not isinstance(value, float) or math.isfinite(value)


def _has_kind(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _kind_of(value) -> str:
    """A value's type in the words of a settings file, with its article."""
    for kind, words in (
        (bool, "a boolean"),
        (int, "an integer"),
        (float, "a number"),
        (str, "a string"),
        (dict, "a table"),
        ((list, tuple), "a list"),
    ):
        if isinstance(value, kind):
            return words
    return f"a {type(value).__name__}"


SETTINGS_FILE_SUFFIXES = (".json", ".toml")


def read_settings(path) -> dict:
    """The settings a JSON or TOML file gives (a dict, not yet checked).

    A run's own `run.json` is such a file. Keys use the settings' names
    (`batch_size`) or the flags' spelling (`batch-size`).
    """
    import pathlib

    path = pathlib.Path(path)
    text = path.read_text()
    suffix = path.suffix.lower()
    if suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise ValueError(
                f"{path}: TOML settings files need Python 3.11 or newer; "
                "write the settings as JSON"
            ) from None
        settings = tomllib.loads(text)
    else:
        try:
            settings = json.loads(text)
        except ValueError as e:
            if suffix == ".json":
                raise
            raise ValueError(
                f"settings files are JSON (.json) or TOML (.toml), and {path.name} "
                f"is not JSON ({e}): write the settings as JSON or TOML"
            ) from None
    if not isinstance(settings, dict):
        raise ValueError(f"{path} must hold a table of settings")
    return {key.replace("-", "_"): value for key, value in settings.items()}
