"""Sample quality on MNIST: SGDA-Adam, SE-A, SVRE, SVRE-VRAd and SVRE-GAN-WS at an equal cost.

    python benchmarks/quality_mnist.py --budget 20000 --eval-every 2500 \
        --seeds 0 1 2 --methods adam se-a svre svre-vrad svre-ws --jobs 2

Trains each method on the offline MNIST digits (`keras_svre.data.load()`,
5,000 images) with the same networks (`mnist_dcgan`), batch size and budget,
the budget counted in minibatch evaluations of the game's vector field (the
paper's x-axis, METHOD.md's cost model):

- SGDA with Adam (`adam`): 1 per iteration;
- stochastic extragradient with Adam (`se-a`): 2 per iteration;
- SVRE (`svre`) and SVRE with Adam steps (`svre-vrad`): 4 per iteration,
  plus `n = num_examples / batch_size` for every snapshot pass (the first
  one, before training, included): a pass evaluates the field on all `n`
  minibatches' worth of examples, whatever batch size it runs at.

A run stops at the first iteration at which its count reaches the budget.
Along the way (`keras_svre.evaluation`), about every `--eval-every`
evaluations and at the end, the current, averaged and EMA generators are
scored with the SVRE paper's MNIST classifier (an MLP, read in place from
`../shared/reference/mnist_mlp_classifier.npz`; its Inception Scores are the
ones comparable with the paper's) and with the project's own classifier
(`saved_models/mnist_classifier.keras`): Inception Score, FID against the
5,000 real digits, label entropy. The gradient estimate's second moment and
variance across 10 minibatches are measured at the same points (these
measurement evaluations are not counted in the budget).

Writes `<out>.json` (configuration, every run's curve, per method the
final and best values, mean and std over seeds, and `equal_iterations`:
every method at the same number of iterations, whatever they cost) after
every run, and `<out>.png` (IS with the paper's classifier, FID, and the
players' gradient variance, against gradient evaluations, and IS and FID
against iterations; mean over seeds, one thin line per seed). `--table`
prints the tables as Markdown. The summaries, tables and figures are made
by `benchmarks/quality_report.py` from the runs' records.
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
# OpenBLAS' threads spin against TensorFlow's on a few shared cores: the FID's
# eigendecompositions ran 4x slower with them.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import quality_report  # noqa: E402  (beside this file)
import tensorflow as tf  # noqa: E402

import keras_svre  # noqa: E402
from keras_svre import data, metrics, models, optimizers  # noqa: E402
from keras_svre.evaluation import GeneratorEvaluation, GradientVariance  # noqa: E402

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
REFERENCE_CLASSIFIER = (
    REPOSITORY.parent / "shared" / "reference" / "mnist_mlp_classifier.npz"
)

# The paper's MNIST settings (METHOD.md; the method table's step sizes):
# Adam-based methods 1e-3 with beta_1 = 0.5, plain SVRE 1e-2.
METHODS = {
    "adam": {"beta_1": 0.5, "label": "SGDA-Adam"},
    "se-a": {"beta_1": 0.5, "label": "SE-A"},
    "svre": {"label": "SVRE"},
    "svre-vrad": {"beta_1": 0.5, "label": "SVRE-VRAd"},
    # SVRE-GAN-WS (the paper's warm start): SGDA-Adam with its settings above
    # for the first `--warm-evaluations`, then SVRE with its settings above.
    # The warm length was picked on seed 100, which is never reported.
    "svre-ws": {"warm_start": "adam", "then": "svre", "label": "SVRE-GAN-WS"},
    # alpha-SVRE (issue 21): the coefficient on the correction estimated
    # from running averages ("optimal", the optimizer's defaults), with
    # plain and Adam steps, and the one-minibatch variant
    # (3 evaluations per iteration).
    "svre-opt": {"label": "alpha-SVRE"},
    "svre-vrad-opt": {"beta_1": 0.5, "label": "alpha-SVRE-VRAd"},
    # Tuning only (seed 100, never reported): a longer memory for C and V.
    "svre-vrad-opt-slow": {
        "method": "svre-vrad-opt",
        "beta_1": 0.5,
        "vr_statistics_decay": 0.99,
        "label": "alpha-SVRE-VRAd, decay 0.99",
    },
    # Snapshots when they are needed (issue 21, item 3): a new snapshot
    # when the estimated correlation rho falls below 0.5 (where SVRE's
    # correction starts adding variance), instead of Bernoulli(1/n) draws.
    "svre-vrad-opt-rc": {
        "method": "svre-vrad-opt",
        "beta_1": 0.5,
        "restart_correlation": 0.5,
        "label": "alpha-SVRE-VRAd, snapshot when rho < 0.5",
    },
    "svre-vrad-opt-1mb": {
        "method": "svre-vrad-opt",
        "beta_1": 0.5,
        "one_minibatch": True,
        "label": "alpha-SVRE-VRAd, one minibatch",
    },
}
LABELS = {method: settings["label"] for method, settings in METHODS.items()}
# Settings of a METHODS entry that are not optimizer arguments.
_NOT_OPTIMIZER = ("label", "warm_start", "then", "method", "one_minibatch")


class GradientEvaluationCount:
    """Minibatch evaluations of the game's field spent so far by a GAN's training.

    `offset` is what earlier phases of the same run spent (the warm start).
    """

    def __init__(self, gan, pass_cost: float, offset: float = 0.0):
        self.gan = gan
        self.per_iteration = gan.evaluations_per_iteration
        self.pass_cost = pass_cost
        self.offset = offset

    def __call__(self, iterations=None, snapshots=None) -> float:
        if iterations is None:
            iterations = self.gan.iterations
        if snapshots is None:
            snapshots = self.gan.snapshots_taken
        return (
            self.offset + iterations * self.per_iteration + snapshots * self.pass_cost
        )


class StopAtBudget(keras.callbacks.Callback):
    """Stops training once the count of gradient evaluations reaches a budget."""

    def __init__(self, count: GradientEvaluationCount, budget: float):
        super().__init__()
        self.count = count
        self.budget = budget

    def on_train_batch_end(self, batch, logs=None):
        if self.count() >= self.budget:
            self.model.stop_training = True


class TrainingClock(keras.callbacks.Callback):
    """Wall-clock seconds spent training, measurements excluded.

    Placed before the measuring callbacks: a step's time runs from its
    `on_train_batch_begin` to its `on_train_batch_end`, which comes after
    the snapshot schedule's (`Game.fit` puts it first), so SVRE's snapshot
    passes count and the measurements that follow do not. The time from the
    `fit` call to the first batch (tracing, the first snapshot pass) counts
    too. `at[iteration]` is the total after that iteration.
    """

    def __init__(self, offset: float = 0.0):
        super().__init__()
        self.seconds = offset
        self.at: dict[int, float] = {}
        self._since = None

    def start(self):
        self._since = time.perf_counter()

    def on_train_batch_begin(self, batch, logs=None):
        self._since = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.seconds += time.perf_counter() - self._since
        self.at[self.model.iterations] = self.seconds


class _SnapshotLag(keras.callbacks.Callback):
    """Tracks the iterations since the last snapshot, for the traces below."""

    def __init__(self):
        super().__init__()
        self._snapshots, self._snapshot_iteration = None, 0

    def _iteration_and_lag(self):
        """`(iteration, lag)` after the batch that just ended."""
        iteration = int(self.model.iterations)
        snapshots = int(self.model.snapshots_taken)
        if snapshots != self._snapshots:
            self._snapshots, self._snapshot_iteration = snapshots, iteration
        return iteration, iteration - self._snapshot_iteration


class AlphaTrace(_SnapshotLag):
    """alpha-SVRE's coefficient along a run (issue 21: why it helps or not).

    Every `every` iterations, the alpha the next iteration will use, with
    the iterations since the last snapshot (`lag`): per player, the median
    over its tensors (`alpha_<player>`), the mean weighted by the tensors'
    sizes (`alpha_<player>_weighted`: what most parameters get; the median
    counts a BatchNorm vector of 16 like a kernel of 73,728) and each
    tensor's (`alphas_<player>`, in the order of `tensors`). Only for
    optimizers with `vr_coefficient="optimal"`.
    """

    def __init__(self, every: int = 5):
        super().__init__()
        self.every = every
        self.records = []
        self.tensors = {}

    def on_train_batch_end(self, batch, logs=None):
        iteration, lag = self._iteration_and_lag()
        if iteration % self.every:
            return
        record = {"iteration": iteration, "lag": lag}
        for optimizer in self.model.svre_optimizers:
            if not optimizer.estimates_coefficient:
                continue
            for player, variables in self.model.players().items():
                alphas = np.array(
                    [
                        float(keras.ops.convert_to_numpy(a))
                        for a in optimizer.vr_coefficients(variables)
                    ]
                )
                sizes = np.array([float(np.prod(v.shape)) for v in variables])
                self.tensors[player] = [v.path for v in variables]
                record[f"alpha_{player}"] = round(float(np.median(alphas)), 4)
                record[f"alpha_{player}_weighted"] = round(
                    float(np.sum(alphas * sizes) / np.sum(sizes)), 4
                )
                record[f"alphas_{player}"] = [round(a, 4) for a in alphas.tolist()]
        if len(record) > 2:
            self.records.append(record)


class CorrectionNoise(_SnapshotLag):
    """What the correction does to the noise, along a variance-reduced run.

    Every `every` iterations, at the current point w (nothing is updated), on
    `num_batches` minibatches of its own pipeline: per player, the variance
    across minibatches (E||x_m - mean x||^2, all the player's tensors) of

    - the plain estimate F_m(w) (`variance_plain_<player>`);
    - SVRE's, F_m(w) - F_m(w_S) + mu_S, over the plain one
      (`ratio_svre_<player>`);
    - the one the optimizer uses now (its alpha, `"optimal"` or not), over
      the plain one (`ratio_used_<player>`);
    - the in-sample oracle's, F_m(w) - alpha* (F_m(w_S) - mu_S) with alpha*
      = Cov / Var per tensor on these minibatches, the least any per-tensor
      alpha reaches on them (`ratio_oracle_<player>`), and alpha* itself,
      weighted by the tensors' sizes (`alpha_star_<player>`);

    with the iterations since the snapshot (`lag`). The variance study
    (`benchmarks/variance_mnist.py`) measures the same on a fixed snapshot
    schedule; this measures it on the compared runs themselves. The
    measurement's evaluations are not counted in the budget.
    """

    def __init__(self, dataset, every: int, num_batches: int = 10):
        super().__init__()
        self.dataset, self.every, self.num_batches = dataset, every, num_batches
        self.records = []
        self._iterator, self._pair = None, None

    def on_train_batch_end(self, batch, logs=None):
        iteration, lag = self._iteration_and_lag()
        if iteration % self.every == 0:
            record = {"iteration": iteration, "lag": lag}
            record.update(self.measure())
            self.records.append(record)

    def measure(self):
        model = self.model
        if self._iterator is None:
            self._iterator = iter(self.dataset.repeat())

            @tf.function
            def pair(data):
                current, _ = model.field(data, model.current_point())
                at_snapshot, _ = model.field(data, model.snapshot_point())
                used = model.variance_reduced_direction(current, at_snapshot)
                return [model.by_player(x) for x in (current, at_snapshot, used)]

            self._pair = pair
        samples = [self._pair(next(self._iterator)) for _ in range(self.num_batches)]
        values = {}
        for player in model.players():
            plain, svre, used, oracle, alpha_star, sizes = 0.0, 0.0, 0.0, 0.0, [], []
            for k in range(len(samples[0][0][player])):
                a, b, d = (
                    np.stack(
                        [
                            np.asarray(s[part][player][k], np.float64).ravel()
                            for s in samples
                        ]
                    )
                    for part in range(3)
                )
                a, b, d = a - a.mean(0), b - b.mean(0), d - d.mean(0)
                var_a, var_b = np.mean(np.sum(a * a, 1)), np.mean(np.sum(b * b, 1))
                cov = np.mean(np.sum(a * b, 1))
                plain += var_a
                svre += var_a - 2 * cov + var_b
                used += np.mean(np.sum(d * d, 1))
                oracle += var_a - (cov * cov / var_b if var_b > 0 else 0.0)
                alpha_star.append(cov / var_b if var_b > 0 else 1.0)
                sizes.append(a.shape[1])
            values[f"variance_plain_{player}"] = float(plain)
            if plain > 0:
                values[f"ratio_svre_{player}"] = float(svre / plain)
                values[f"ratio_used_{player}"] = float(used / plain)
                values[f"ratio_oracle_{player}"] = float(oracle / plain)
            values[f"alpha_star_{player}"] = float(
                np.average(alpha_star, weights=sizes)
            )
        return values


def load_data(args, seed):
    return data.load(
        batch_size=args.batch_size,
        snapshot_batch_size=args.snapshot_batch_size,
        seed=seed,
    )


def _settings(method):
    """A method's recorded settings, its step size from the method table included."""
    settings = dict(METHODS[method])
    if "warm_start" not in settings:
        table = optimizers.method(settings.get("method", method))
        settings["learning_rate"] = table.learning_rate
    return settings


def _cost_per_iteration(method):
    """Minibatch evaluations per iteration, from the method table."""
    settings = METHODS[method]
    if "warm_start" not in settings:
        table = optimizers.method(settings.get("method", method))
        return table.evaluations_per_iteration(
            one_minibatch=settings.get("one_minibatch", False)
        )
    warm, then = (optimizers.method(settings[k]) for k in ("warm_start", "then"))
    return (
        f"{warm.evaluations_per_iteration()} (warm start), "
        f"then {then.evaluations_per_iteration()}"
    )


def phases(method, args):
    """A run's phases: `(method, optimizer settings, evaluations at its end)`."""
    settings = METHODS[method]
    if "warm_start" not in settings:
        return [(method, settings, args.budget)]
    warm, then = settings["warm_start"], settings["then"]
    return [
        (warm, METHODS[warm], min(args.warm_evaluations, args.budget)),
        (then, METHODS[then], args.budget),
    ]


def train_one(method, seed, args, classifiers):
    """Trains one method with one seed; returns its record (curve and totals)."""
    # Everything seeded from here, pipelines included (their shuffle seeds
    # combine TF's global seed with their own), and pipelines of the run's
    # own: creating an iterator on a shuffled tf.data pipeline advances its
    # shuffle seed, so sharing one across runs (or with the measurement)
    # would make a run depend on what ran before it.
    keras.utils.set_random_seed(seed)
    finite_sum = load_data(args, seed)
    probe = load_data(args, seed + 10_000).train
    generator, discriminator = models.get_networks("mnist_dcgan", width=args.width)
    gan = keras_svre.GAN(
        generator,
        discriminator,
        num_examples=finite_sum.num_examples,
        ema_decay=args.ema_decay,
        seed=seed,
        latents=args.latents,
    )
    pass_cost = finite_sum.num_examples / finite_sum.batch_size
    spent, iterations_before, snapshots_before = 0.0, 0, 0
    clock = TrainingClock()
    curve, details, alpha_trace, correction_noise = [], [], [], []
    start = time.time()
    for index, (name, settings, until) in enumerate(phases(method, args)):
        if spent >= until:
            continue
        kwargs = {k: v for k, v in settings.items() if k not in _NOT_OPTIMIZER}
        table = optimizers.method(settings.get("method", name))
        gan.compile(
            optimizer=table.build(table.learning_rate, **kwargs),
            one_minibatch=settings.get("one_minibatch", False),
        )
        count = GradientEvaluationCount(gan, pass_cost, offset=spent)
        # Iterations between measurements, from the expected cost of an
        # iteration (SVRE: 4 plus one pass of n evaluations every n
        # iterations on average).
        per_epoch = finite_sum.batches_per_epoch // gan.minibatches_per_iteration
        expected_cost = count.per_iteration + (
            pass_cost / finite_sum.batches_per_epoch if gan.variance_reduced else 0
        )
        every = max(1, round(args.eval_every / expected_cost))
        evaluation = GeneratorEvaluation(
            every,
            real_images=finite_sum.snapshot,
            classifier=classifiers,
            num_samples=args.num_samples,
            seed=seed,
            monitor="is_current_paper",
        )
        variance = GradientVariance(probe, every, num_batches=10)
        clock.at = {}
        alphas = AlphaTrace()
        traces = [(alphas, alpha_trace)]
        if args.correction_noise_every and gan.variance_reduced:
            # A pipeline of its own, made after the run's (see above).
            noise = CorrectionNoise(
                load_data(args, seed + 20_000).train, args.correction_noise_every
            )
            traces.append((noise, correction_noise))
        callbacks = [StopAtBudget(count, until), clock, variance, evaluation]
        callbacks += [trace for trace, _ in traces]
        fit_kwargs = {}
        if gan.variance_reduced:
            fit_kwargs["snapshot_data"] = finite_sum.snapshot
        clock.start()
        gan.fit(
            finite_sum.train,
            epochs=10**6,
            steps_per_epoch=per_epoch,
            callbacks=callbacks,
            verbose=0,
            **fit_kwargs,
        )
        variance_by_iteration = {r["iteration"]: r for r in variance.records}
        for record in evaluation.records:
            point = dict(record)
            point["evaluations"] = count(
                record["iteration"], record.get("snapshots", 0)
            )
            point["train_seconds"] = round(clock.at.get(record["iteration"], 0.0), 2)
            point["phase"] = index
            for key, value in variance_by_iteration.get(
                record["iteration"], {}
            ).items():
                point.setdefault(key, value)
            point["iteration"] += iterations_before
            if "snapshots" in point:
                point["snapshots"] += snapshots_before
            curve.append(point)
        phase_iterations = gan.iterations
        phase_snapshots = gan.snapshots_taken
        for trace, kept in traces:
            for record in trace.records:
                record["iteration"] += iterations_before
            kept.extend(trace.records)
        details.append(
            {
                "method": name,
                "iterations": phase_iterations,
                "snapshots": phase_snapshots,
                "evaluations": count() - spent,
                "evaluate_every_iterations": every,
            }
        )
        spent = count()
        iterations_before += phase_iterations
        snapshots_before += phase_snapshots
    seconds = time.time() - start
    return {
        "method": method,
        "seed": seed,
        "iterations": iterations_before,
        "snapshots": snapshots_before,
        "evaluations": spent,
        "phases": details,
        "seconds": round(seconds, 1),
        "train_seconds": round(clock.seconds, 1),
        "curve": curve,
        **(
            {"alpha_trace": alpha_trace, "alpha_tensors": alphas.tensors}
            if alpha_trace
            else {}
        ),
        **({"correction_noise": correction_noise} if correction_noise else {}),
    }


def _parser():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=2000,
        help="minibatch gradient evaluations per run (the paper: 2e4)",
    )
    parser.add_argument(
        "--width", type=int, default=8, help="network width (paper: 64)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--methods", nargs="+", default=list(METHODS), choices=list(METHODS)
    )
    parser.add_argument("--batch-size", type=int, default=50, help="the paper's: 50")
    parser.add_argument("--snapshot-batch-size", type=int, default=500)
    parser.add_argument(
        "--eval-every",
        type=float,
        default=None,
        help="gradient evaluations between measurements (default: budget / 4)",
    )
    parser.add_argument(
        "--num-samples", type=int, default=2000, help="generated images per score"
    )
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=0.99,
        help="EMA of the generator (short runs need a short horizon)",
    )
    parser.add_argument(
        "--latents",
        default="auto",
        choices=keras_svre.gan.LATENT_SCHEDULES,
        help="when the latents are drawn anew (auto: per snapshot for SVRE, per "
        "epoch otherwise)",
    )
    parser.add_argument(
        "--correction-noise-every",
        type=int,
        default=0,
        help="variance-reduced runs: measure what the correction does to the "
        "estimate's variance every this many iterations (0: never; see "
        "CorrectionNoise)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="TensorFlow intra-op threads (0: TF's default); 1 was fastest for "
        "these small networks on 2 shared cores",
    )
    parser.add_argument(
        "--reference-classifier",
        default=str(REFERENCE_CLASSIFIER),
        help="the paper's MNIST MLP (.npz), read in place",
    )
    parser.add_argument(
        "--out",
        default=str(REPOSITORY / "benchmarks" / "results" / "quality_mnist"),
        help="output path without suffix (.json and .png are written)",
    )
    parser.add_argument(
        "--warm-evaluations",
        type=float,
        default=5000,
        help="svre-ws: evaluations of SGDA-Adam before SVRE (picked on seed 100 "
        "from 2500 and 5000: final IS 5.81 vs 5.33, FID 125 vs 213)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at once, one process each (one (method, seed) per process); "
        "every finished run is kept in <out>_runs/ and not run again",
    )
    parser.add_argument("--run-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--replot",
        action="store_true",
        help="only recompute the summary and plot of an existing <out>.json",
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="print the README's Markdown table of an existing <out>.json",
    )
    return parser


def _config(args, finite_sum):
    return {
        "command": "python benchmarks/quality_mnist.py " + " ".join(sys.argv[1:]),
        "dataset": f"{finite_sum.name} ({finite_sum.num_examples} digits)",
        "networks": f"mnist_dcgan, width {args.width}",
        "budget": args.budget,
        "batch_size": args.batch_size,
        "snapshot_batch_size": args.snapshot_batch_size,
        "snapshot_pass_cost": finite_sum.num_examples / finite_sum.batch_size,
        "cost_per_iteration": {m: _cost_per_iteration(m) for m in args.methods},
        "methods": {m: _settings(m) for m in args.methods},
        "warm_evaluations": args.warm_evaluations,
        "seeds": args.seeds,
        "eval_every": args.eval_every,
        "num_samples": args.num_samples,
        "ema_decay": args.ema_decay,
        "latents": args.latents,
        "generator_statistics": (
            "BatchNorm statistics recomputed per generator from "
            f"{keras_svre.gan.STATISTICS_SAMPLES} fresh latents in training mode"
        ),
        "threads": args.threads,
        "classifiers": {
            "paper": "SVRE paper's MLP 784-256-256-10 (../shared/reference)",
            "project": "saved_models/mnist_classifier.keras",
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared)",
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def _write(out, config, runs, methods, started):
    # Method-major, seed order: the same file whatever order the runs ended in.
    runs = sorted(runs, key=lambda r: (methods.index(r["method"]), r["seed"]))
    result = {
        "config": config,
        "total_seconds": round(time.time() - started, 1),
        **quality_report.analyse(runs, methods, LABELS),
        "runs": runs,
    }
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    quality_report.draw(runs, methods, LABELS, out)
    return result


def _report(run):
    last = run["curve"][-1]
    print(
        f"{run['method']:10s} seed {run['seed']}: {run['iterations']} iterations, "
        f"{run['evaluations']:.0f} evaluations, {run['train_seconds']:.0f} s "
        f"training; IS paper {last['is_current_paper']:.2f} (ema "
        f"{last['is_ema_paper']:.2f}), IS project "
        f"{last['is_current_project']:.2f}, FID {last['fid_current_project']:.1f}",
        flush=True,
    )


def _run_in_processes(args, argv, todo):
    """Runs each (method, seed) of `todo` in a process of its own, `--jobs` at once."""
    import subprocess

    waiting, running = list(todo), []
    while waiting or running:
        while waiting and len(running) < args.jobs:
            method, seed = waiting.pop(0)
            command = [sys.executable, __file__, *argv, "--run-only"]
            command += ["--methods", method, "--seeds", str(seed), "--jobs", "1"]
            running.append(((method, seed), subprocess.Popen(command)))
        time.sleep(2)
        for item in list(running):
            (method, seed), process = item
            if process.poll() is None:
                continue
            running.remove(item)
            if process.returncode:
                print(f"{method} seed {seed} failed (exit {process.returncode})")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    out = pathlib.Path(args.out)
    if args.replot:
        quality_report.replot(out, LABELS)
        return
    if args.table:
        quality_report.table(out)
        return
    if args.eval_every is None:
        args.eval_every = args.budget / 4
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    finite_sum = load_data(args, args.seeds[0])
    config = _config(args, finite_sum)
    started = time.time()
    # Every finished run is kept on its own, so an interrupted benchmark
    # loses at most the runs in flight and a rerun of the same command
    # continues it.
    runs_dir = out.parent / f"{out.name}_runs"
    runs_dir.mkdir(exist_ok=True)

    def part(method, seed):
        return runs_dir / f"{method}_seed{seed}.json"

    todo = [(m, s) for s in args.seeds for m in args.methods if not part(m, s).exists()]
    if args.jobs > 1 and len(todo) > 1:
        shared = _without_options(argv, ("--methods", "--seeds", "--jobs"))
        _run_in_processes(args, shared, todo)
    else:
        classifiers = {
            "paper": metrics.reference_mnist_classifier(args.reference_classifier),
            "project": metrics.load_mnist_classifier(),
        }
        # Seed-major order: an interrupted run still has every method per seed.
        for method, seed in todo:
            run = train_one(method, seed, args, classifiers)
            temporary = part(method, seed).with_suffix(".tmp")
            temporary.write_text(json.dumps(run, indent=1))
            os.replace(temporary, part(method, seed))
            _report(run)
    if args.run_only:
        return
    runs = [
        json.loads(part(m, s).read_text())
        for s in args.seeds
        for m in args.methods
        if part(m, s).exists()
    ]
    result = _write(out, config, runs, args.methods, started)
    print(
        json.dumps(
            {m: quality_report.headline(s) for m, s in result["summary"].items()}
        )
    )


def _without_options(argv, names):
    """`argv` without the given options and their values."""
    kept, skip = [], False
    for item in argv:
        if skip and not item.startswith("--"):
            continue
        skip = False
        name = item.split("=", 1)[0]
        if name in names:
            skip = "=" not in item
            continue
        kept.append(item)
    return kept


if __name__ == "__main__":
    main()
