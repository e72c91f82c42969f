"""`keras-svre presets`: the paper's configurations, one line each."""

from __future__ import annotations


def add_parser(subparsers):
    return subparsers.add_parser(
        "presets",
        help="list the paper's configurations (keras-svre train --preset NAME)",
    )


def run(args) -> None:
    """Runs `keras-svre presets`: one line per preset."""
    from keras_svre import presets

    for name in presets.names():
        print(f"{name:20s} {presets.DESCRIPTIONS.get(name, '')}")
