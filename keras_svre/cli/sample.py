"""`keras-svre sample`: generated images of a saved GAN (.npy, a PNG grid, PNG
files)."""

from __future__ import annotations

import argparse
import pathlib

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


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sample",
        help="write generated images of a saved GAN (.npy, a PNG grid, PNG files)",
        description="Write generated images in [0, 1] of a saved GAN: an .npy "
        "array (--out), a PNG grid (--grid) and/or one PNG file per image "
        "(--png-dir, 8 bits, e.g. for FID tools); at least one of them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="a saved GAN (.keras)")
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument(
        "--out", default=None, help="output .npy file (float32, [N, H, W, C])"
    )
    parser.add_argument(
        "--grid", default=None, metavar="PATH.png", help="output PNG grid"
    )
    parser.add_argument(
        "--png-dir",
        default=None,
        metavar="DIR",
        help="output folder, one 8-bit PNG file per image (it must hold no PNG "
        "files yet)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out or --grid file (without it they are "
        "refused; a --png-dir that holds PNG files always is)",
    )
    parser.add_argument("--which", default="best", choices=WHICH, help=WHICH_HELP)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def _outputs(args):
    """The checked `--out`, `--grid` and `--png-dir` paths (`None` if not given)."""
    if args.out is None and args.grid is None and args.png_dir is None:
        raise UsageError(
            "nothing to write: give --out FILE.npy, --grid FILE.png and/or "
            "--png-dir DIR"
        )
    out = grid = png_dir = None
    if args.out is not None:
        out = pathlib.Path(args.out)
        rundir.check_output_file("--out", out, ".npy", args.overwrite)
    if args.grid is not None:
        grid = pathlib.Path(args.grid)
        rundir.check_output_file("--grid", grid, ".png", args.overwrite)
    if args.png_dir is not None:
        png_dir = pathlib.Path(args.png_dir)
        rundir.check_can_create(png_dir, "--png-dir")
        # Images of an earlier call would mix with these (and skew a score).
        if png_dir.is_dir() and any(png_dir.glob("*.png")):
            raise UsageError(
                f"--png-dir {png_dir} already holds PNG files: give an empty or "
                "new folder"
            )
    return out, grid, png_dir


def run(args) -> None:
    """Runs `keras-svre sample`."""
    import numpy as np

    path = check_model_file(args.model)
    if args.num < 1:
        raise UsageError("--num must be at least 1")
    out, grid, png_dir = _outputs(args)
    check_intact(path)
    gan = load_gan(path)
    which, why = which_generator(gan, args.which, path)
    images = (gan.generate(args.num, which=which, seed=args.seed) + 1.0) / 2.0
    images = np.clip(images, 0.0, 1.0).astype("float32")
    written = []
    try:
        if out is not None:
            rundir.make_folder(out.parent, "the folder of --out")
            np.save(out, images)
            written.append(f"{out}")
        if grid is not None:
            from keras_svre import callbacks

            rundir.make_folder(grid.parent, "the folder of --grid")
            callbacks.save_image_grid(images, grid)
            written.append(f"a grid in {grid}")
        if png_dir is not None:
            rundir.make_folder(png_dir, "--png-dir")
            _write_png_files(images, png_dir)
            written.append(f"{len(images)} PNG files in {png_dir}")
    except OSError as e:
        flags = {str(out): "--out", str(grid): "--grid", str(png_dir): "--png-dir"}
        where = e.filename or "the images"
        flag = next((f for path, f in flags.items() if str(where).startswith(path)), "")
        where = f"{flag} {where}".strip()
        raise UsageError(f"could not write {where} ({e.strerror or e})") from None
    print(
        f"wrote {images.shape[0]} images of shape {images.shape[1:]} from the "
        f"{which} generator{why} to {', '.join(written)}"
    )


def _write_png_files(images, folder):
    """One 8-bit PNG per image (`[N, H, W, C]` in [0, 1]): grey or RGB(A)."""
    import numpy as np

    # Pillow comes with matplotlib (the sample grids' dependency).
    from PIL import Image

    pixels = np.round(images * 255.0).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    digits = len(str(len(pixels) - 1))
    for k, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{k:0{digits}d}.png")
