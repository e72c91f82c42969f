"""Where SVRE's variance reduction holds on MNIST, and where a coefficient helps.

    python benchmarks/variance_mnist.py   # 42 min per variant on 2 crowded cores

Along an SVRE run (plain steps, the paper's MNIST settings: batch 50, step
1e-2, the `mnist_dcgan` networks at width 8 on the offline digits), at the
SAME point w and on the SAME M minibatches, this measures estimates of the
game's field F(w):

- the plain stochastic one, F_i(w);
- SVRE's, d_i(w) = F_i(w) - F_i(w_S) + mu_S;
- the alpha-corrected one (alpha-SVRG, Yin et al. 2025, arXiv 2311.05589),
  d_alpha,i(w) = F_i(w) - alpha (F_i(w_S) - mu_S), with one alpha PER
  VARIABLE TENSOR, for these choices of alpha:

  - `svre`: alpha = 1 (SVRE itself, computed as before);
  - `alpha_<a>`: a fixed alpha (`--fixed-alphas`, default 0.5);
  - `oracle`: alpha* = Cov(F_i(w), F_i(w_S)) / Var(F_i(w_S)) computed on the
    same M minibatches (in-sample: the least variance any per-tensor alpha
    reaches on them, so a lower bound for every other choice);
  - `oracle_clipped`: alpha* clipped to [0, 1] (what `alpha_max = 1` costs);
  - `ema_<decay>_<at snapshot>_<C>`: the estimate an optimizer could make,
    alpha_hat = clip(C / V, 0, 1) with C and V exponential moving averages
    (decay `--alpha-decays`) of <F_i(w) - c, F_i(w_S) - mu_S> and
    ||F_i(w_S) - mu_S||^2 per tensor, fed by both paired evaluations of
    every earlier SVRE iteration of the run (the extrapolation's, at w, and
    the update's, at the extrapolated point, on the training minibatches:
    the train step's own evaluations, recorded as it computes them, so at
    no extra cost and independent of the measurement's minibatches).
    C: `raw` (c = 0, the issue's definition) or `centred` (c = mu_S; see
    `RunningPairs`). At a snapshot: `zero`, C and V restart from zero (with
    no pair since the snapshot yet, alpha_hat = 1, exact at w = w_S); `one`,
    C is set to V (alpha_hat = 1, with the weight of the whole average,
    from which the new pairs move it at rate 1 - decay); `keep`, they run on
    across snapshots.

For each estimate its variance across minibatches, E||x_i - mean x||^2, and
its mean squared error against the full field at w, E||x_i - F(w)||^2, with
F(w) the mean of F_i(w) over the whole dataset partitioned into
training-size minibatches (so the MSE includes any bias). Snapshots are taken
every `--snapshot-every` iterations (no random restarts) and the measurements
are made at several numbers of iterations since the last snapshot (0, 1, 2,
5, ...), so the ratios Var[d] / Var[F_i] can be read against them. Each
measurement also records alpha* and alpha_hat per tensor.

Variants: with and without BatchNorm in both networks (`batch_norm=False`),
and with mu_S from a snapshot pass at the training batch size (50) or at the
paper's 500. With BatchNorm in training mode an example's gradient depends
on the other examples of its batch, so mu_S computed at batch 500 is not the
mean of the F_i(w_S) at batch 50: the estimate is biased by
mu_S - mean_i F_i(w_S). That bias is measured at each snapshot (its squared
norm, beside the variance of the plain estimate). The default runs the two
"mu at batch 500" variants (the paper's setting, with and without
BatchNorm); the "mu at batch 50" ones stay selectable with `--variants`.

With `--warm-start-iterations N` the SVRE run starts after N iterations of
SGDA-Adam, where the warm-started runs (and the default `keras-svre train`)
switch to SVRE.

Writes `<out>.json` (configuration, every measurement, per variant and
offset the median over snapshots of each ratio and of alpha*) and
`<out>.png`; `--table` prints the README's tables from `<out>.json`.
"""

from __future__ import annotations

import argparse
import contextlib
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
DEFAULT_VARIANTS = ["batchnorm, mu at batch 500", "no batchnorm, mu at batch 500"]
PLAYERS = ("generator", "discriminator")
# alpha_hat's upper clip (the optimizer's alpha_max); alpha* is also reported
# unclipped, to show what the clip costs.
ALPHA_MAX = 1.0


def _flat(tensors):
    return tf.concat([tf.reshape(tf.cast(t, tf.float64), [-1]) for t in tensors], 0)


def _flat_each(tensors):
    return [tf.reshape(tf.cast(t, tf.float64), [-1]) for t in tensors]


class RunningPairs:
    """Running averages of SVRE's paired evaluations, per variable tensor.

    For each setting `(decay, at_snapshot, centred)`, exponential moving averages
    C <- decay C + (1 - decay) <F_i(w) - c, F_i(w_S) - mu_S> and
    V <- decay V + (1 - decay) ||F_i(w_S) - mu_S||^2, from zero, with c = 0
    (the issue's definition, "raw") or c = mu_S ("centred"). Both estimate
    Cov(F_i(w), F_i(w_S)), since F_i(w_S) - mu_S has mean zero over the
    minibatches (up to BatchNorm's bias); the raw one also carries the term
    <F(w), F_i(w_S) - mu_S>, noise that is large when the mean field is large
    against the minibatch noise, which centring on mu_S (free, and equal to
    F(w) at the snapshot) removes: at w = w_S the centred C / V is exactly 1.
    Zero initial values need no bias correction: it would scale C and V
    alike and leave C / V unchanged.
    """

    def __init__(self, num_tensors, decays):
        self.settings = [
            (d, at_snapshot, centred)
            for d in decays
            for at_snapshot in ("zero", "one", "keep")
            for centred in (True, False)
        ]
        self.c = {
            s: [tf.Variable(0.0, dtype=tf.float64) for _ in range(num_tensors)]
            for s in self.settings
        }
        self.v = {
            s: [tf.Variable(0.0, dtype=tf.float64) for _ in range(num_tensors)]
            for s in self.settings
        }
        self.pairs = tf.Variable(0, dtype=tf.int64)
        # Read when the train step is traced: only the training fits record.
        self.active = False

    @staticmethod
    def name(setting):
        decay, at_snapshot, centred = setting
        return f"ema_{decay:g}_{at_snapshot}_{'centred' if centred else 'raw'}"

    @contextlib.contextmanager
    def recording(self):
        self.active = True
        try:
            yield
        finally:
            self.active = False

    def update(self, gradients, snapshot_gradients, mu):
        """Folds one pair (F_i at a point, F_i(w_S)) into the averages."""
        for t, (g, g_s, m) in enumerate(zip(gradients, snapshot_gradients, mu)):
            g = tf.cast(g, tf.float64)
            m = tf.cast(m, tf.float64)
            s = tf.cast(g_s, tf.float64) - m
            inner = {False: tf.reduce_sum(g * s), True: tf.reduce_sum((g - m) * s)}
            norm2 = tf.reduce_sum(s * s)
            for setting in self.settings:
                decay, _, centred = setting
                c, v = self.c[setting][t], self.v[setting][t]
                c.assign(decay * c + (1.0 - decay) * inner[centred])
                v.assign(decay * v + (1.0 - decay) * norm2)
        self.pairs.assign_add(1)

    def reset(self):
        """At a snapshot: `zero` settings restart from zero, `one` set C = V."""
        for setting in self.settings:
            for c, v in zip(self.c[setting], self.v[setting]):
                if setting[1] == "zero":
                    c.assign(0.0)
                    v.assign(0.0)
                elif setting[1] == "one":
                    c.assign(v)

    def alphas(self, setting):
        """alpha_hat = clip(C / V, 0, ALPHA_MAX) per tensor (1 while V = 0)."""
        c = np.array([x.numpy() for x in self.c[setting]])
        v = np.array([x.numpy() for x in self.v[setting]])
        ratio = np.divide(c, v, out=np.ones_like(c), where=v > 0)
        return np.clip(ratio, 0.0, ALPHA_MAX)


class PairRecordingGAN(keras_svre.GAN):
    """A GAN whose train step also feeds each paired evaluation to `RunningPairs`.

    The train step forms SVRE's direction with `variance_reduced_direction(g,
    g_S)` for both of its pairs; while `_running_pairs.active`, this also
    records them. The recording only reads the gradients: the iterates are
    those of the plain GAN.
    """

    def variance_reduced_direction(self, gradients, snapshot_gradients):
        direction = super().variance_reduced_direction(gradients, snapshot_gradients)
        pairs = self.__dict__.get("_running_pairs")
        if pairs is not None and pairs.active:
            zeros = [tf.zeros_like(g) for g in gradients]
            # 0 - 0 + mu_S: mu_S exactly, per tensor.
            mu = super().variance_reduced_direction(zeros, zeros)
            pairs.update(gradients, snapshot_gradients, mu)
        return direction


def estimates_function(gan):
    """Per player, on one minibatch: F_i(w) and F_i(w_S) per tensor, and d_i(w)."""

    @tf.function
    def estimates(batch):
        g, _ = gan.field(batch, gan.current_point())
        g_snapshot, _ = gan.field(batch, gan.snapshot_point())
        d = gan.variance_reduced_direction(g, g_snapshot)
        return (
            {p: _flat_each(part) for p, part in gan.by_player(g).items()},
            {p: _flat_each(part) for p, part in gan.by_player(g_snapshot).items()},
            {p: _flat(part) for p, part in gan.by_player(d).items()},
        )

    return estimates


def full_field(gan, dataset):
    """The mean over `dataset`'s examples of F_i at the current point, per player."""
    mean = gan.snapshot_mean_gradient(dataset)
    return {p: _flat(part).numpy() for p, part in gan.by_player(mean).items()}


def mean_gradient(gan):
    """mu_S per player and tensor: the variance-reduced direction of g = g_S = 0."""
    zeros = [tf.zeros_like(v) for v in gan.game_variables]
    mu = gan.variance_reduced_direction(zeros, zeros)
    return {
        p: [t.numpy() for t in _flat_each(part)]
        for p, part in gan.by_player(mu).items()
    }


def _spread(x, mean):
    """E_i ||x_i - mean||^2 over the minibatches (rows)."""
    return float(np.mean(np.sum((x - mean) ** 2, axis=1)))


def measure(function, batches, full, mu, fixed_alphas, running):
    """Variance and MSE of every estimate on `batches`, and the alphas used.

    Args:
        function: `estimates_function(gan)`.
        batches: The M probe minibatches.
        full: The full field at w, per player (flattened).
        mu: mu_S per player and tensor.
        fixed_alphas: The fixed alphas to measure.
        running: `{name: {player: alpha_hat per tensor}}`, from the training
            iterations before this point.
    """
    outputs = [function(batch) for batch in batches]
    result = {}
    for p in PLAYERS:
        num_tensors = len(mu[p])
        # Per tensor, minibatches in rows.
        g = [
            np.stack([o[0][p][t].numpy() for o in outputs]) for t in range(num_tensors)
        ]
        s = [
            np.stack([o[1][p][t].numpy() for o in outputs]) - mu[p][t]
            for t in range(num_tensors)
        ]
        plain = np.concatenate(g, axis=1)
        svre = np.stack([o[2][p].numpy() for o in outputs])
        for name, x in (("plain", plain), ("svre", svre)):
            result[f"variance_{name}_{p}"] = _spread(x, x.mean(axis=0))
            result[f"mse_{name}_{p}"] = _spread(x, full[p])
        result[f"full_norm2_{p}"] = float(np.sum(full[p] ** 2))

        # In-sample alpha* per tensor: the minimiser of the variance above.
        covariance = np.array(
            [
                np.mean(np.sum((a - a.mean(0)) * (b - b.mean(0)), axis=1))
                for a, b in zip(g, s)
            ]
        )
        variance = np.array([_spread(b, b.mean(0)) for b in s])
        alpha_star = np.divide(
            covariance, variance, out=np.ones_like(covariance), where=variance > 0
        )
        alphas = {f"alpha_{a:g}": np.full(num_tensors, a) for a in fixed_alphas}
        alphas["oracle"] = alpha_star
        alphas["oracle_clipped"] = np.clip(alpha_star, 0.0, ALPHA_MAX)
        alphas.update({name: per_player[p] for name, per_player in running.items()})
        for name, alpha in alphas.items():
            x = np.concatenate([a - k * b for a, b, k in zip(g, s, alpha)], axis=1)
            result[f"variance_{name}_{p}"] = _spread(x, x.mean(axis=0))
            result[f"mse_{name}_{p}"] = _spread(x, full[p])
        result[f"alpha_oracle_{p}"] = [float(a) for a in alpha_star]
        result[f"alpha_oracle_pooled_{p}"] = float(covariance.sum() / variance.sum())
        for name, per_player in running.items():
            result[f"alpha_{name}_{p}"] = [float(a) for a in per_player[p]]
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
    gan = PairRecordingGAN(
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
    running = RunningPairs(len(gan.game_variables), args.alpha_decays)
    # Not a tracked attribute: the averages are no part of the model.
    object.__setattr__(gan, "_running_pairs", running)

    # An SVRE iteration takes two minibatches (extrapolation and update), so
    # one pass over the training data holds only this many iterations: longer
    # stretches are run as several fits, each from a fresh pass (a single fit
    # would run out of data and stop early).
    per_pass = int(finite_sum.train.cardinality()) // gan.minibatches_per_iteration

    def train(steps):
        expected = gan.iterations + steps
        with running.recording():
            while steps > 0:
                gan.fit(
                    finite_sum.train,
                    snapshot_data=finite_sum.snapshot,
                    epochs=1,
                    steps_per_epoch=min(steps, per_pass),
                    verbose=0,
                )
                steps -= min(steps, per_pass)
        if gan.iterations != expected:
            raise RuntimeError(
                f"Expected {expected} iterations, ran {gan.iterations}: the "
                "measurements would be placed at the wrong lags."
            )

    function = estimates_function(gan)
    records, done = [], 0
    offsets = sorted({k for k in args.offsets if k <= args.snapshot_every})
    for cycle in range(args.cycles):
        gan.take_snapshot(finite_sum.snapshot, restart=False)
        running.reset()
        # At the snapshot w = w_S: the estimate's bias is mu_S - mean_i F_i(w_S).
        mu = mean_gradient(gan)
        mu_flat = {p: np.concatenate(mu[p]) for p in PLAYERS}
        at_snapshot = full_field(gan, partition)
        bias = {p: float(np.sum((mu_flat[p] - at_snapshot[p]) ** 2)) for p in PLAYERS}
        previous = 0
        for k in offsets:
            if k > previous:
                train(k - previous)
                previous = k
            batches = [next(probe_iterator) for _ in range(args.num_batches)]
            full = at_snapshot if k == 0 else full_field(gan, partition)
            alpha_hat = {
                running.name(s): gan.by_player(list(running.alphas(s)))
                for s in running.settings
            }
            record = {
                "variant": name,
                "cycle": cycle,
                "iteration": done + k,
                "since_snapshot": k,
            }
            record.update({f"bias_norm2_{p}": bias[p] for p in PLAYERS})
            record.update(
                measure(function, batches, full, mu, args.fixed_alphas, alpha_hat)
            )
            records.append(record)
            ratios = " ".join(
                f"{p[0].upper()} {choice} "
                f"{record[f'variance_{choice}_{p}'] / record[f'variance_plain_{p}']:.3g}"
                for p in PLAYERS
                for choice in ("svre", "oracle", running.name(running.settings[0]))
            )
            print(
                f"{name:31s} cycle {cycle} k={k:4d}: variance ratio {ratios}",
                flush=True,
            )
        if args.snapshot_every > previous:
            train(args.snapshot_every - previous)
        done += args.snapshot_every
    # Every SVRE iteration fed two pairs (extrapolation and update).
    print(f"{name}: {int(running.pairs.numpy())} pairs recorded over {done} iterations")
    return records


def alpha_choices(records):
    """The alpha choices the records hold, in the order they are reported."""
    keys = [
        k for k in records[0] if k.startswith("variance_") and k.endswith("_generator")
    ]
    return [
        k[len("variance_") : -len("_generator")]
        for k in keys
        if k != "variance_plain_generator"
    ]


def summarize(records):
    """Median over snapshots, per variant and offset, of each ratio to plain and of alpha."""
    summary = {}
    choices = alpha_choices(records)
    for variant in VARIANTS:
        mine = [r for r in records if r["variant"] == variant]
        if not mine:
            continue
        running = [
            k[len("alpha_") : -len("_generator")]
            for k in mine[0]
            if k.startswith("alpha_ema") and k.endswith("_generator")
        ]
        by_offset = {}
        for k in sorted({r["since_snapshot"] for r in mine}):
            at = [r for r in mine if r["since_snapshot"] == k]
            entry = {}
            for p in PLAYERS:
                for measure_name in ("variance", "mse"):
                    for choice in choices:
                        ratios = [
                            r[f"{measure_name}_{choice}_{p}"]
                            / r[f"{measure_name}_plain_{p}"]
                            for r in at
                        ]
                        # SVRE's keys keep their names of the first version.
                        key = (
                            f"{measure_name}_ratio_{p}"
                            if choice == "svre"
                            else f"{measure_name}_ratio_{choice}_{p}"
                        )
                        entry[key] = float(np.median(ratios))
                entry[f"bias_over_plain_variance_{p}"] = float(
                    np.median(
                        [r[f"bias_norm2_{p}"] / r[f"variance_plain_{p}"] for r in at]
                    )
                )
                # alpha: median over tensors, then over snapshots.
                for name in ["oracle"] + running:
                    entry[f"alpha_{name}_median_{p}"] = float(
                        np.median([np.median(r[f"alpha_{name}_{p}"]) for r in at])
                    )
                entry[f"alpha_oracle_pooled_{p}"] = float(
                    np.median([r[f"alpha_oracle_pooled_{p}"] for r in at])
                )
                entry[f"alpha_oracle_above_max_fraction_{p}"] = float(
                    np.mean([a > ALPHA_MAX for r in at for a in r[f"alpha_oracle_{p}"]])
                )
            by_offset[str(k)] = entry
        summary[variant] = by_offset
    return summary


def _label(choice):
    if choice == "svre":
        return "alpha = 1 (SVRE)"
    if choice == "oracle":
        return "alpha* (in-sample oracle)"
    if choice == "oracle_clipped":
        return f"clip(alpha*, 0, {ALPHA_MAX:g})"
    if choice.startswith("alpha_"):
        return f"alpha = {choice[len('alpha_') :]}"
    _, decay, at_snapshot, centred = choice.split("_")
    at_snapshot = {"zero": "reset to 0", "one": "C := V", "keep": "kept"}[at_snapshot]
    return (
        f"alpha_hat, decay {decay}, {at_snapshot} at snapshot, "
        f"C {'centred on mu_S' if centred == 'centred' else 'raw'}"
    )


def _short(variant):
    return variant.replace("batchnorm", "BN").replace(", mu at batch ", ", mu@")


def plot(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = [v for v in VARIANTS if any(r["variant"] == v for r in records)]
    choices = alpha_choices(records)
    figure, axes = plt.subplots(
        len(variants) + 1, 2, figsize=(17, 4.2 * (len(variants) + 1)), sharex=True
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # alpha_hat: one colour per (decay, at snapshot), solid when C is centred on
    # mu_S, dashed when raw.
    styles = {
        "svre": ("black", "-", 2.4),
        "oracle": ("tab:green", "-", 2.4),
        "oracle_clipped": ("tab:olive", ":", 2.0),
    }
    running = sorted({c.rsplit("_", 1)[0] for c in choices if c.startswith("ema_")})
    hues = ["tab:blue", "tab:red", "tab:purple", "tab:orange", "tab:cyan", "tab:pink"]
    for choice in choices:
        if choice.startswith("ema_"):
            hue = hues[running.index(choice.rsplit("_", 1)[0]) % len(hues)]
            styles[choice] = (hue, "-" if choice.endswith("centred") else "--", 1.3)
        elif choice not in styles:
            styles[choice] = ("tab:brown", "-.", 1.6)
    for row, variant in enumerate(variants):
        mine = [r for r in records if r["variant"] == variant]
        offsets = sorted({r["since_snapshot"] for r in mine})
        # Log axes: k = 0 drawn at 0.5; zeros (the variance at the snapshot
        # itself, exact or at rounding level, ~1e-32) are left out.
        x = np.array([k + 0.5 for k in offsets])
        for column, p in enumerate(PLAYERS):
            axis = axes[row, column]
            for choice in choices:
                medians = np.array(
                    [
                        np.median(
                            [
                                r[f"variance_{choice}_{p}"] / r[f"variance_plain_{p}"]
                                for r in mine
                                if r["since_snapshot"] == k
                            ]
                        )
                        for k in offsets
                    ]
                )
                color, style, width = styles[choice]
                axis.plot(
                    x[medians > 1e-12],
                    medians[medians > 1e-12],
                    color=color,
                    linestyle=style,
                    linewidth=width,
                    marker="o",
                    markersize=3,
                    label=_label(choice),
                )
            axis.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
            axis.set_xscale("log")
            axis.set_yscale("log")
            axis.set_title(f"{p}, {variant}: Var[d_alpha] / Var[F_i(w)]", fontsize=10)
            axis.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(
        handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(0.75, 0.98)
    )
    for column, p in enumerate(PLAYERS):
        axis = axes[-1, column]
        for color, variant in zip(colors, variants):
            mine = [r for r in records if r["variant"] == variant]
            offsets = sorted({r["since_snapshot"] for r in mine})
            x = np.array([k + 0.5 for k in offsets])
            names = ["oracle"] + [
                k[len("alpha_") : -len("_generator")]
                for k in mine[0]
                if k.startswith("alpha_ema")
                and "_keep_" not in k
                and k.endswith("_centred_generator")
            ]
            line_styles = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
            for name, style in zip(names, line_styles):
                medians = [
                    np.median(
                        [
                            np.median(r[f"alpha_{name}_{p}"])
                            for r in mine
                            if r["since_snapshot"] == k
                        ]
                    )
                    for k in offsets
                ]
                axis.plot(
                    x,
                    medians,
                    color=color,
                    linestyle=style,
                    linewidth=2.4 if name == "oracle" else 1.2,
                    marker="o",
                    markersize=3,
                    label=f"{_short(variant)}: "
                    + (
                        "alpha*"
                        if name == "oracle"
                        else name.replace("ema_", "alpha_hat ")
                    ),
                )
        axis.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_title(f"{p}: alpha, median over tensors and snapshots", fontsize=10)
        axis.set_xlabel("iterations since the snapshot (+0.5)")
        axis.grid(alpha=0.3)
    handles, labels = axes[-1, 0].get_legend_handles_labels()
    figure.legend(
        handles, labels, fontsize=8, loc="lower left", bbox_to_anchor=(0.75, 0.02)
    )
    figure.tight_layout(rect=(0, 0, 0.75, 1))
    figure.savefig(path, dpi=100)
    plt.close(figure)


def table(result):
    """The README's tables (Markdown) from a result's summary."""
    summary = result["summary"]
    records = result["records"]
    choices = alpha_choices(records)
    lines = []
    for p in PLAYERS:
        for variant, by_offset in summary.items():
            offsets = [k for k in by_offset if k != "0"]
            lines.append(f"\n{p}, {variant}: median Var[d_alpha] / Var[F_i(w)]\n")
            lines.append("| alpha | " + " | ".join(offsets) + " |")
            lines.append("|---" * (len(offsets) + 1) + "|")
            for choice in choices:
                key = (
                    f"variance_ratio_{p}"
                    if choice == "svre"
                    else f"variance_ratio_{choice}_{p}"
                )
                cells = [f"{by_offset[k][key]:.3g}" for k in offsets]
                lines.append(f"| {_label(choice)} | " + " | ".join(cells) + " |")
    lines.append("\nalpha* (median over tensors, then snapshots) and alpha* pooled\n")
    offsets = list(next(iter(summary.values())))
    lines.append("| | " + " | ".join(offsets) + " |")
    lines.append("|---" * (len(offsets) + 1) + "|")
    for p in PLAYERS:
        for variant, by_offset in summary.items():
            for key, what in (
                (f"alpha_oracle_median_{p}", "alpha*"),
                (f"alpha_oracle_pooled_{p}", "pooled alpha*"),
                (f"alpha_oracle_above_max_fraction_{p}", "share of tensors alpha* > 1"),
            ):
                cells = [f"{by_offset[k][key]:.2f}" for k in offsets]
                lines.append(f"| {p}, {variant}: {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
        "--variants", nargs="+", default=DEFAULT_VARIANTS, choices=list(VARIANTS)
    )
    parser.add_argument(
        "--fixed-alphas", type=float, nargs="+", default=[0.5], help="fixed alphas"
    )
    parser.add_argument(
        "--alpha-decays",
        type=float,
        nargs="+",
        default=[0.9, 0.99],
        help="decays of the running averages behind alpha_hat",
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
    parser.add_argument(
        "--table",
        action="store_true",
        help="only print the README's tables from <out>.json",
    )
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    out = pathlib.Path(args.out)
    if args.replot or args.table:
        result = json.loads(out.with_suffix(".json").read_text())
        if args.table:
            print(table(result))
        if args.replot:
            plot(result["records"], out.with_suffix(".png"))
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
                **{
                    k: v
                    for k, v in vars(args).items()
                    if k not in ("out", "replot", "table")
                },
                "alpha_max": ALPHA_MAX,
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
