"""Cost of one iteration of each method, against SGDA with Adam, in one run.

    python benchmarks/step_cost.py                       # CPU, MNIST DCGAN
    python benchmarks/step_cost.py --networks mnist_dcgan:64 dcgan32:64 --steps 30

For each network and method (SGDA-Adam, SE, SE-A, SVRE, SVRE-VRAd, and
SVRE with one minibatch per iteration), with and without XLA
(`jit_compile=True`), each in a fresh subprocess (so peak memory is its
own), it measures:

- the median time of a training iteration (iterations with a snapshot pass
  excluded), and its ratio to SGDA-Adam's (the cost model says 1, 2, 2, 4, 4
  and 3 minibatch evaluations);
- the snapshot pass: seconds per pass and examples/s, against a plain
  gradient pass over the same data at the same batch size;
- the amortised cost per epoch (iterations + the expected snapshot passes
  at p = 1/n);
- peak memory (host RSS on CPU; device peak on GPU).

Prints a table and writes `benchmarks/results/step_cost_<device>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

METHODS = ["adam", "se", "se-a", "svre", "svre-vrad", "svre-1mb"]


def measure(
    network: str,
    width: int,
    method: str,
    jit: bool,
    steps: int,
    batch_size: int,
    snapshot_batch_size: int,
) -> dict:
    """One configuration, in this process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_svre

    keras.utils.set_random_seed(0)
    generator, discriminator = keras_svre.models.get_networks(network, width=width)
    shape = tuple(discriminator.input_shape[1:])
    n = 64 * batch_size  # a synthetic finite sum: 64 minibatches
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (n,) + shape).astype("float32")
    index = np.arange(n, dtype=np.int32)
    train = (
        tf.data.Dataset.from_tensor_slices((index, images))
        .batch(batch_size, drop_remainder=True)
        .cache()
        .repeat()
        .prefetch(8)
    )
    snapshot = (
        tf.data.Dataset.from_tensor_slices((index, images))
        .batch(snapshot_batch_size)
        .cache()
    )
    gan = keras_svre.GAN(generator, discriminator, num_examples=n, seed=0)
    one_minibatch = method == "svre-1mb"
    table = keras_svre.optimizers.method("svre" if one_minibatch else method)
    kwargs = table.applicable(beta_1=0.5, restart_probability=1.0 / 64)
    optimizer = table.build(table.learning_rate, **kwargs)
    gan.compile(
        optimizer=optimizer,
        jit_compile=jit,
        **({"one_minibatch": True} if one_minibatch else {}),
    )

    times, snapshots_seen = [], []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()
            self.s = gan.snapshots_taken

        def on_train_batch_end(self, batch, logs=None):
            float(logs[next(iter(logs))])  # wait for the step's results
            times.append(time.perf_counter() - self.t)
            snapshots_seen.append(gan.snapshots_taken != self.s)

    fit_kwargs = {"snapshot_data": snapshot} if gan.variance_reduced else {}
    warmup = 3
    gan.fit(
        train,
        epochs=1,
        steps_per_epoch=steps + warmup,
        verbose=0,
        callbacks=[Timer()],
        **fit_kwargs,
    )
    # The timer callback runs after the snapshot callback, so an iteration that
    # drew a snapshot includes the pass: leave those out of the median.
    clean = [t for t, s in zip(times[warmup:], snapshots_seen[warmup:]) if not s]
    result = {
        "network": network,
        "width": width,
        "method": method,
        "jit_compile": jit,
        "batch_size": batch_size,
        "iterations_timed": len(clean),
        "median_iteration_s": statistics.median(clean),
        "evaluations_per_iteration": gan.evaluations_per_iteration,
        "parameters": int(generator.count_params() + discriminator.count_params()),
    }
    if gan.variance_reduced:
        gan.take_snapshot(snapshot)  # traced already; time the next ones
        passes = []
        for _ in range(3):
            t = time.perf_counter()
            gan.take_snapshot(snapshot)
            passes.append(time.perf_counter() - t)
        result["snapshot_pass_s"] = statistics.median(passes)
        result["snapshot_examples_per_s"] = n / result["snapshot_pass_s"]
        plain = _plain_gradient_pass(gan, snapshot)
        result["plain_pass_s"] = plain
        result["plain_examples_per_s"] = n / plain
        result["snapshot_vs_plain_speed"] = plain / result["snapshot_pass_s"]
        per_epoch = 64 // gan.minibatches_per_iteration
        result["amortised_epoch_s"] = (
            per_epoch * result["median_iteration_s"]
            + per_epoch / 64 * result["snapshot_pass_s"]
        )
    else:
        per_epoch = 64 // gan.minibatches_per_iteration
        result["amortised_epoch_s"] = per_epoch * result["median_iteration_s"]
    result["peak_memory_mb"] = _peak_memory_mb()
    return result


def _plain_gradient_pass(gan, dataset):
    """A plain pass: both players' gradients on every batch, summed, in one tf.function."""
    import tensorflow as tf

    variables = gan.game_variables

    @tf.function
    def run():
        sums = tuple(tf.zeros(v.shape, v.dtype) for v in variables)
        for batch in dataset:
            with tf.GradientTape(persistent=True) as tape:
                losses = gan.compute_player_losses(batch, training=True)
            grads = tape.gradient(
                losses["generator"], gan.generator.trainable_variables
            )
            grads += tape.gradient(
                losses["discriminator"], gan.discriminator.trainable_variables
            )
            sums = tuple(s + g for s, g in zip(sums, grads))
        return sums

    run()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        [s.numpy() for s in run()]
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _peak_memory_mb():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--networks",
        nargs="+",
        default=["mnist_dcgan:16"],
        help="name:width pairs (keras_svre.models names)",
    )
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--jit", choices=["off", "on", "both"], default="both")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--snapshot-batch-size", type=int, default=512)
    parser.add_argument("--out", default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:  # child process: one configuration, JSON on the last line
        network, width, method, jit = args.one.split(",")
        print(
            json.dumps(
                measure(
                    network,
                    int(width),
                    method,
                    jit == "1",
                    args.steps,
                    args.batch_size,
                    args.snapshot_batch_size,
                )
            )
        )
        return

    jits = {"off": [False], "on": [True], "both": [False, True]}[args.jit]
    rows = []
    for spec in args.networks:
        network, width = spec.split(":")
        for jit in jits:
            for method in args.methods:
                cmd = [
                    sys.executable,
                    __file__,
                    "--one",
                    f"{network},{width},{method},{int(jit)}",
                    "--steps",
                    str(args.steps),
                    "--batch-size",
                    str(args.batch_size),
                    "--snapshot-batch-size",
                    str(args.snapshot_batch_size),
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(
                        f"{network}:{width} {method} jit={jit} FAILED:\n{proc.stderr[-2000:]}"
                    )
                    rows.append(
                        {
                            "network": network,
                            "width": int(width),
                            "method": method,
                            "jit_compile": jit,
                            "error": proc.stderr[-2000:],
                        }
                    )
                    continue
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(
                    f"  {network}:{width} jit={int(jit)} {method:10s} "
                    f"{row['median_iteration_s'] * 1e3:8.1f} ms",
                    flush=True,
                )

    for row in rows:
        base = [
            r
            for r in rows
            if r.get("network") == row.get("network")
            and r.get("jit_compile") == row.get("jit_compile")
            and r.get("method") == "adam"
            and "error" not in r
        ]
        if base and "error" not in row:
            row["ratio_to_sgda_adam"] = (
                row["median_iteration_s"] / base[0]["median_iteration_s"]
            )

    import tensorflow as tf

    device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
    print(
        f"\n{'network':16s} {'jit':3s} {'method':10s} {'ms/iter':>8s} {'ratio':>6s} "
        f"{'limit':>5s} {'snap/plain':>10s} {'epoch s':>8s} {'peak MB':>8s}"
    )
    for r in rows:
        if "error" in r:
            continue
        print(
            f"{r['network'] + ':' + str(r['width']):16s} {int(r['jit_compile']):3d} "
            f"{r['method']:10s} {r['median_iteration_s'] * 1e3:8.1f} "
            f"{r.get('ratio_to_sgda_adam', float('nan')):6.2f} "
            f"{r['evaluations_per_iteration']:5d} "
            f"{r.get('snapshot_vs_plain_speed', float('nan')):10.2f} "
            f"{r['amortised_epoch_s']:8.2f} {r['peak_memory_mb']:8.0f}"
        )
    out = pathlib.Path(args.out or f"benchmarks/results/step_cost_{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"device": device, "argv": sys.argv[1:], "results": rows}, indent=1)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
