"""What the commands share: the usage error, and reading a saved GAN."""

from __future__ import annotations

import pathlib
import zipfile

EXIT_USAGE = 2

# The generators `sample` and `export` take: "best" is the GAN's
# default_generator, the others are keras_svre.gan.GENERATORS.
WHICH = ("best", "ema", "average", "current")

WHICH_HELP = (
    "the generator: 'best' is the one that scored best in the run's final "
    "evaluation (saved in the model; the EMA if the run was not evaluated), "
    "or the (debiased) EMA of the iterates, their uniform average, or the "
    "current iterate"
)


class UsageError(Exception):
    """Bad input: reported in one line, exit code 2, no traceback."""


def check_model_file(model) -> pathlib.Path:
    """`--model`: a file that exists (`check_intact` reads it)."""
    path = pathlib.Path(model)
    if not path.exists():
        raise UsageError(f"no such model file: {path}")
    if path.is_dir():
        raise UsageError(f"--model {path} is a folder: give a .keras file")
    return path


def check_intact(path) -> None:
    """A .keras file is a zip archive: one that is not was cut short or damaged
    (Keras would call it "not found")."""
    if not zipfile.is_zipfile(path):
        raise UsageError(
            f"{path} is corrupt or truncated (a .keras file is a zip archive, and "
            "this one cannot be read as one): give an intact .keras file"
        )


def load_gan(path):
    """The keras_svre GAN saved in `path` (checked by `check_model_file`)."""
    import keras

    import keras_svre  # noqa: F401  (registers the classes for loading)

    try:
        gan = keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 - any load failure is the user's file
        raise UsageError(f"could not load {path} as a keras_svre GAN: {e}") from None
    if not hasattr(gan, "generate"):
        raise UsageError(f"{path} is not a keras_svre GAN")
    return gan


def which_generator(gan, which, path) -> tuple[str, str]:
    """The generator `--which` names, and why (for the report); `path` is the
    model's file (the run's records beside it say what chose the default)."""
    if which == "best":
        from keras_svre import run

        return gan.default_generator, run.why_default_generator(gan, path)
    return which, ""
