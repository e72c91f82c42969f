"""The GAN's own memory on the ImageNet 32x32 preset: the variables a GAN keeps.

    python benchmarks/gan_memory.py [--num-examples 1281167]

Builds the `imagenet32-svre` preset's networks and GAN (ResNet width 128,
hinge loss) for the size of ImageNet 32x32's training split, compiles it with
the preset's SVRE, and counts the bytes of every variable, split into the
networks, the GAN's own state (averaged generators, counters, any per-example
state) and the optimizer's slots. Writes `benchmarks/results/gan_memory.json`.
Run it on a revision with a latent bank and on one without to compare (the
JSON records the revision).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import keras_svre  # noqa: E402
from keras_svre import presets  # noqa: E402

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]


def nbytes(variables):
    return int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-examples", type=int, default=1_281_167)
    parser.add_argument("--preset", default="imagenet32-svre")
    parser.add_argument(
        "--out", default=str(REPOSITORY / "benchmarks" / "results" / "gan_memory.json")
    )
    args = parser.parse_args()
    config = presets.PRESETS[args.preset]
    phase = config.phases(batches_per_epoch=args.num_examples // config.batch_size)[-1]
    gan = config.build_gan(args.num_examples, phase)
    networks = gan.generator.weights + gan.discriminator.weights
    network_ids = {id(v) for v in networks}
    own = [v for v in gan.weights if id(v) not in network_ids]
    largest = max(own, key=lambda v: np.prod(v.shape))
    slots = [v for o in gan.game_optimizers for v in o.variables]
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        # The revision of the keras_svre that runs (PYTHONPATH may pick another).
        cwd=pathlib.Path(keras_svre.__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    ).stdout.strip()
    result = {
        "command": "python benchmarks/gan_memory.py",
        "revision": revision,
        "preset": args.preset,
        "num_examples": args.num_examples,
        "networks_mb": round(nbytes(networks) / 1e6, 2),
        "gan_own_state_mb": round(nbytes(own) / 1e6, 2),
        "largest_own_variable": f"{largest.path} {tuple(largest.shape)}",
        "optimizer_slots_mb": round(nbytes(slots) / 1e6, 2),
        "total_mb": round(nbytes(networks + own + slots) / 1e6, 2),
    }
    print(json.dumps(result, indent=1))
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
