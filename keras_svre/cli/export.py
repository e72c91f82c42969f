"""`keras-svre export`: one generator of a saved GAN as a standalone model."""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

from keras_svre.cli import rundir
from keras_svre.cli.common import (
    WHICH,
    WHICH_HELP,
    UsageError,
    check_intact,
    check_model_file,
    load_gan,
    which_generator,
)

EXPORT_FORMATS = ("keras", "savedmodel")


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "export",
        help="write one generator of a saved GAN as a standalone model",
        description="Write one generator of a saved GAN as a standalone model: "
        "a .keras file (--format keras; keras.saving.load_model reads it) or a "
        "TensorFlow SavedModel folder (--format savedmodel) whose "
        "'serving_default' signature maps 'latent' (float32 [N, latent_dim]) to "
        "'image'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a saved GAN (.keras)")
    # Checked in `run` (one line, exit 2) rather than by argparse `choices`.
    parser.add_argument(
        "--which", default="best", metavar="{" + ",".join(WHICH) + "}", help=WHICH_HELP
    )
    parser.add_argument(
        "--format",
        default="keras",
        metavar="{" + ",".join(EXPORT_FORMATS) + "}",
        help="a .keras file or a TensorFlow SavedModel folder",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="the .keras file (--format keras) or SavedModel folder to write",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out (a SavedModel folder only if it holds one)",
    )
    return parser


def _check_arguments(args, model, out, saved_model):
    if saved_model:
        from keras_svre import _optional

        try:
            _optional.require(
                "tensorflow",
                "--format savedmodel",
                "install TensorFlow, or write a .keras file with --format keras",
            )
        except ImportError as e:
            raise UsageError(str(e)) from None
    if not saved_model and out.suffix != ".keras":
        raise UsageError(
            f"--format keras writes a .keras file: give --out a name ending in "
            f".keras (not {out})"
        )
    if out.exists() and os.path.samefile(out, model):
        raise UsageError(
            f"--out {out} is the --model file itself, and writing the generator "
            "there would lose the GAN: choose another --out"
        )
    if out.exists() or out.is_symlink():
        if not args.overwrite:
            raise UsageError(
                f"--out {out} already exists: choose another path, or give "
                "--overwrite to replace it"
            )
        if not saved_model and out.is_dir():
            raise UsageError(f"--out {out} is a folder; --format keras writes a file")
        # --overwrite deletes a folder: only ever one that holds a SavedModel.
        if saved_model and not (out / "saved_model.pb").is_file():
            raise UsageError(
                f"--out {out} is not a SavedModel folder, and --overwrite replaces "
                "only one: choose another path"
            )
    rundir.check_can_create(out.parent, "the folder of --out")


def run(args) -> None:
    """Runs `keras-svre export`."""
    from keras_svre.cli import saved_model as saved_model_lib

    if args.which not in WHICH:
        raise UsageError(
            f"unknown --which {args.which!r}; choose one of {', '.join(WHICH)}"
        )
    if args.format not in EXPORT_FORMATS:
        raise UsageError(
            f"unknown --format {args.format!r}; choose one of "
            f"{', '.join(EXPORT_FORMATS)}"
        )
    out = pathlib.Path(args.out)
    saved_model = args.format == "savedmodel"
    path = check_model_file(args.model)
    _check_arguments(args, path, out, saved_model)
    check_intact(path)
    gan = load_gan(path)
    which, why = which_generator(gan, args.which, path)
    generator = gan.generator_model(which)
    rundir.make_folder(out.parent, "the folder of --out")
    try:
        if saved_model:
            saved_model_lib.write_saved_model(generator, gan.latent_dim, out)
        else:
            from keras_svre import callbacks

            callbacks.save_atomically(generator, out)
    except OSError as e:
        raise UsageError(f"could not write --out {out} ({e.strerror or e})") from None
    what = (
        "a SavedModel (signature serving_default: latent -> image)"
        if saved_model
        else "a .keras model"
    )
    print(f"wrote the {which} generator{why} of {path} to {out}, {what}")
    custom = saved_model_lib.custom_classes(generator)
    if custom and not saved_model:
        print(
            f"keras-svre export: note: {out} uses classes defined outside Keras "
            f"({', '.join(custom)}): load it after importing them (`import "
            "keras_svre` for keras_svre's)",
            file=sys.stderr,
        )
