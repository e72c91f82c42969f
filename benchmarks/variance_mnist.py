"""Where SVRE's variance reduction holds on MNIST, and where it does not.

    python benchmarks/variance_mnist.py            # ~10 minutes on 2 cores

Along an SVRE run (plain steps, the paper's MNIST settings: batch 50, step
1e-2, the `mnist_dcgan` networks at width 8 on the offline digits), at the
SAME point w and on the SAME M minibatches, this measures two estimates of
the game's field F(w):

- the plain stochastic one, F_i(w);
- SVRE's, d_i(w) = F_i(w) - F_i(w_S) + mu_S;

and for each its variance across minibatches, E||x_i - mean x||^2, and its
mean squared error against the full field at w, E||x_i - F(w)||^2, with F(w)
the mean of F_i(w) over the whole dataset partitioned into training-size
minibatches (so the MSE includes any bias). Snapshots are taken every
`--snapshot-every` iterations (no random restarts) and the measurements are
made at several numbers of iterations since the last snapshot (0, 1, 2, 5,
...), so the variance ratio Var[d_i] / Var[F_i] can be read against them.

Four variants: with and without BatchNorm in both networks
(`batch_norm=False`), and with mu_S from a snapshot pass at the training
batch size (50) or at the paper's 500. With BatchNorm in training mode an
example's gradient depends on the other examples of its batch, so mu_S
computed at batch 500 is not the mean of the F_i(w_S) at batch 50: the
estimate is biased by mu_S - mean_i F_i(w_S). That bias is measured at each
snapshot (its squared norm, beside the variance of the plain estimate).

With `--warm-start-iterations N` the SVRE run starts after N iterations of
SGDA-Adam, where the warm-started runs (and the default `keras-svre train`)
switch to SVRE.

Writes `<out>.json` (configuration, every measurement, per variant and
offset the median variance ratio and MSE ratio) and `<out>.png`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_svre  # noqa: E402
from keras_svre import data, models  # noqa: E402

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
VARIANTS = {
    "batchnorm, mu at batch 500": {"batch_norm": True, "snapshot_batch_size": 500},
    "batchnorm, mu at batch 50": {"batch_norm": True, "snapshot_batch_size": 50},
    "no batchnorm, mu at batch 500": {"batch_norm": False, "snapshot_batch_size": 500},
    "no batchnorm, mu at batch 50": {"batch_norm": False, "snapshot_batch_size": 50},
}
PLAYERS = ("generator", "discriminator")


def _flat(tensors):
    return tf.concat([tf.reshape(tf.cast(t, tf.float64), [-1]) for t in tensors], 0)


def estimates_function(gan):
    """F_i(w) and d_i(w) per player, flattened, on one minibatch."""

    @tf.function
    def estimates(batch):
        g, _ = gan.field(batch, gan.current_point())
        g_snapshot, _ = gan.field(batch, gan.snapshot_point())
        d = gan.variance_reduced_direction(g, g_snapshot)
        return (
            {p: _flat(part) for p, part in gan.by_player(g).items()},
            {p: _flat(part) for p, part in gan.by_player(d).items()},
        )

    return estimates


def full_field(gan, dataset):
    """The mean over `dataset`'s examples of F_i at the current point, per player."""
    mean = gan.snapshot_mean_gradient(dataset)
    return {p: _flat(part).numpy() for p, part in gan.by_player(mean).items()}


def mean_gradient(gan):
    """mu_S, per player, flattened: the variance-reduced direction of g = g_S = 0."""
    zeros = [tf.zeros_like(v) for v in gan.game_variables]
    mu = gan.variance_reduced_direction(zeros, zeros)
    return {p: _flat(part).numpy() for p, part in gan.by_player(mu).items()}


def measure(function, batches, full):
    pairs = [function(batch) for batch in batches]
    result = {}
    for p in PLAYERS:
        plain = np.stack([plain[p].numpy() for plain, _ in pairs])
        reduced = np.stack([reduced[p].numpy() for _, reduced in pairs])
        for name, x in (("plain", plain), ("svre", reduced)):
            mean = x.mean(axis=0)
            result[f"variance_{name}_{p}"] = float(
                np.mean(np.sum((x - mean) ** 2, axis=1))
            )
            result[f"mse_{name}_{p}"] = float(
                np.mean(np.sum((x - full[p]) ** 2, axis=1))
            )
        result[f"full_norm2_{p}"] = float(np.sum(full[p] ** 2))
    return result


def run_variant(name, settings, args):
    keras.utils.set_random_seed(args.seed)
    finite_sum = data.load(
        batch_size=args.batch_size,
        snapshot_batch_size=settings["snapshot_batch_size"],
        seed=args.seed,
    )
    # The whole dataset in training-size minibatches, in order: F(w) and the
    # mean of the F_i(w_S) the training estimate is built from.
    partition = data.load(
        batch_size=args.batch_size, snapshot_batch_size=args.batch_size, seed=args.seed
    ).snapshot
    probe = data.load(batch_size=args.batch_size, seed=args.seed + 10_000).train
    probe_iterator = iter(probe.repeat())
    generator, discriminator = models.get_networks(
        "mnist_dcgan", width=args.width, batch_norm=settings["batch_norm"]
    )
    gan = keras_svre.GAN(
        generator, discriminator, num_examples=finite_sum.num_examples, seed=args.seed
    )
    if args.warm_start_iterations:
        # The measurements then start where the default run switches to SVRE.
        gan.compile(optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5))
        gan.fit(
            finite_sum.train.repeat(),
            epochs=1,
            steps_per_epoch=args.warm_start_iterations,
            verbose=0,
        )
    # No random restarts: the snapshots are taken here, every --snapshot-every.
    adam = {"beta_1": 0.5} if args.method == "svre-vrad" else {}
    gan.compile(
        optimizer=keras_svre.optimizers.get(
            args.method, learning_rate=args.lr, restart_probability=1e-12, **adam
        )
    )
    function = estimates_function(gan)
    records, done = [], 0
    offsets = sorted({k for k in args.offsets if k <= args.snapshot_every})
    for cycle in range(args.cycles):
        gan.take_snapshot(finite_sum.snapshot, restart=False)
        # At the snapshot w = w_S: the estimate's bias is mu_S - mean_i F_i(w_S).
        mu = mean_gradient(gan)
        at_snapshot = full_field(gan, partition)
        bias = {p: float(np.sum((mu[p] - at_snapshot[p]) ** 2)) for p in PLAYERS}
        previous = 0
        for k in offsets:
            if k > previous:
                gan.fit(
                    finite_sum.train,
                    snapshot_data=finite_sum.snapshot,
                    epochs=1,
                    steps_per_epoch=k - previous,
                    verbose=0,
                )
                previous = k
            batches = [next(probe_iterator) for _ in range(args.num_batches)]
            full = at_snapshot if k == 0 else full_field(gan, partition)
            record = {
                "variant": name,
                "cycle": cycle,
                "iteration": done + k,
                "since_snapshot": k,
            }
            record.update({f"bias_norm2_{p}": bias[p] for p in PLAYERS})
            record.update(measure(function, batches, full))
            records.append(record)
            print(
                f"{name:31s} cycle {cycle} k={k:4d}: variance ratio G "
                f"{record['variance_svre_generator'] / record['variance_plain_generator']:.3g}"
                f" D {record['variance_svre_discriminator'] / record['variance_plain_discriminator']:.3g};"
                f" MSE ratio G "
                f"{record['mse_svre_generator'] / record['mse_plain_generator']:.3g}"
                f" D {record['mse_svre_discriminator'] / record['mse_plain_discriminator']:.3g}",
                flush=True,
            )
        if args.snapshot_every > previous:
            gan.fit(
                finite_sum.train,
                snapshot_data=finite_sum.snapshot,
                epochs=1,
                steps_per_epoch=args.snapshot_every - previous,
                verbose=0,
            )
        done += args.snapshot_every
    return records


def summarize(records):
    """Median over cycles of the ratios SVRE / plain, per variant and offset."""
    summary = {}
    for variant in VARIANTS:
        mine = [r for r in records if r["variant"] == variant]
        if not mine:
            continue
        by_offset = {}
        for k in sorted({r["since_snapshot"] for r in mine}):
            at = [r for r in mine if r["since_snapshot"] == k]
            entry = {}
            for p in PLAYERS:
                for measure_name in ("variance", "mse"):
                    ratios = [
                        r[f"{measure_name}_svre_{p}"] / r[f"{measure_name}_plain_{p}"]
                        for r in at
                    ]
                    entry[f"{measure_name}_ratio_{p}"] = float(np.median(ratios))
                entry[f"bias_over_plain_variance_{p}"] = float(
                    np.median(
                        [r[f"bias_norm2_{p}"] / r[f"variance_plain_{p}"] for r in at]
                    )
                )
            by_offset[str(k)] = entry
        summary[variant] = by_offset
    return summary


def plot(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for row, measure_name in enumerate(("variance", "mse")):
        for column, p in enumerate(PLAYERS):
            axis = axes[row, column]
            for color, variant in zip(colors, VARIANTS):
                mine = [r for r in records if r["variant"] == variant]
                if not mine:
                    continue
                offsets = sorted({r["since_snapshot"] for r in mine})
                ratios = [
                    [
                        r[f"{measure_name}_svre_{p}"] / r[f"{measure_name}_plain_{p}"]
                        for r in mine
                        if r["since_snapshot"] == k
                    ]
                    for k in offsets
                ]
                # Log axes: k = 0 drawn at 0.5; exact zeros (the variance at
                # the snapshot itself) are left out.
                x = np.array([k + 0.5 for k in offsets])
                for cycle_ratios in zip(*ratios):
                    y = np.array(cycle_ratios)
                    axis.plot(x[y > 0], y[y > 0], color=color, alpha=0.2, linewidth=0.8)
                medians = np.array([np.median(r) for r in ratios])
                axis.plot(
                    x[medians > 0],
                    medians[medians > 0],
                    color=color,
                    linewidth=2,
                    marker="o",
                    label=variant,
                )
            axis.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_title(
                f"{p}: {'Var' if measure_name == 'variance' else 'MSE'} of SVRE's "
                f"estimate / plain F_i(w)",
                fontsize=10,
            )
            axis.grid(alpha=0.3)
            if row == 1:
                axis.set_xlabel("iterations since the snapshot (+0.5)")
    axes[0, 0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument(
        "--method",
        default="svre",
        choices=["svre", "svre-vrad"],
        help="plain steps, or Adam steps on the variance-reduced direction "
        "(beta_1 0.5)",
    )
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cycles", type=int, default=4, help="snapshots per variant")
    parser.add_argument("--snapshot-every", type=int, default=200)
    parser.add_argument(
        "--offsets",
        type=int,
        nargs="+",
        default=[0, 1, 2, 5, 10, 20, 50, 100, 200],
        help="iterations since the snapshot at which to measure",
    )
    parser.add_argument(
        "--num-batches", type=int, default=20, help="minibatches per measurement"
    )
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS)
    )
    parser.add_argument(
        "--warm-start-iterations",
        type=int,
        default=0,
        help="SGDA-Adam iterations (lr 1e-3, beta_1 0.5) before the SVRE run",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out", default=str(REPOSITORY / "benchmarks" / "results" / "variance_mnist")
    )
    parser.add_argument(
        "--replot", action="store_true", help="only redraw <out>.png from <out>.json"
    )
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    out = pathlib.Path(args.out)
    if args.replot:
        plot(
            json.loads(out.with_suffix(".json").read_text())["records"],
            out.with_suffix(".png"),
        )
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    records = []
    for name in args.variants:
        records += run_variant(name, VARIANTS[name], args)
        result = {
            "config": {
                "command": "python benchmarks/variance_mnist.py "
                + " ".join(sys.argv[1:]),
                **{k: v for k, v in vars(args).items() if k != "out"},
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
                "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
            },
            "seconds": round(time.time() - started, 1),
            "summary": summarize(records),
            "records": records,
        }
        out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        plot(records, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
