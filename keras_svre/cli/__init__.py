"""The `keras-svre` command line: `train` a GAN, `sample` from a saved one,
`export` one of its generators as a standalone model, list the `presets`.

One module per command (`train`, `sample`, `export`, `presets`), each with
`add_parser(subparsers)` and `run(args)`; the run folder they share is
`rundir`, the run settings' flags `settings` (made from `RunConfig`'s
fields).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from keras_svre.cli import export, presets, sample, train
from keras_svre.cli.common import EXIT_USAGE, WHICH, UsageError
from keras_svre.cli.strategy import STRATEGIES

__all__ = ["EXIT_USAGE", "STRATEGIES", "WHICH", "UsageError", "build_parser", "main"]

COMMANDS = {"train": train, "presets": presets, "sample": sample, "export": export}


def build_parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per module of `COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="keras-svre",
        description="Train GANs with SVRE (stochastic variance-reduced extragradient).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(subparsers)
    return parser


def main(argv=None) -> int:
    started = time.time()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    args.started = started
    try:
        COMMANDS[args.command].run(args)
    except UsageError as e:
        print(f"keras-svre {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("keras-svre: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
