"""`keras-svre train`: train a GAN into a run folder.

The run settings are `keras_svre.run.RunConfig`'s (their flags are made from
its fields, `keras_svre.cli.settings`); the other flags here say where the
run goes and what it writes besides the model. Every check, the settings'
and these options', passes before anything trains or touches the run folder.
"""

from __future__ import annotations

import argparse

from keras_svre.cli import rundir
from keras_svre.cli import settings as settings_lib
from keras_svre.cli import strategy as strategy_lib
from keras_svre.cli.common import UsageError
from keras_svre.cli.training import BEST_BY, Training

DESCRIPTION = (
    "Train a GAN. With no flags: SVRE-GAN-WS on the offline MNIST digits "
    "(SGDA-Adam, then SVRE-VRAd; a few minutes on 2 CPU cores). The settings: the "
    "defaults, then --preset, then --config, then the flags given."
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a GAN",
        description=DESCRIPTION,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--preset",
        default=None,
        help="start from one of the paper's configurations (`keras-svre "
        "presets` lists them)",
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="start from the settings in a JSON or TOML file (a run's run.json "
        "is one: repeat a run with --config RUN/run.json)",
    )
    settings_lib.add_run_settings(parser)
    _add_device_options(parser.add_argument_group("devices"))
    _add_output_options(parser.add_argument_group("what the run writes"))
    _add_folder_options(parser.add_argument_group("the run folder"))
    return parser


def _add_device_options(group):
    group.add_argument(
        "--jit",
        action="store_true",
        help="compile steps with XLA (TensorFlow; on JAX they always are)",
    )
    group.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic TensorFlow ops (bit-for-bit repeatable runs and resumes; "
        "TensorFlow backend)",
    )
    group.add_argument(
        "--strategy",
        default="default",
        choices=strategy_lib.STRATEGIES,
        help="tf.distribute strategy (TensorFlow backend; on JAX use "
        "keras.distribution from Python): default (one device), mirrored (all local "
        "GPUs), multiworker (cluster from TF_CONFIG), tpu (see --tpu)",
    )
    group.add_argument(
        "--tpu",
        default=None,
        metavar="ADDRESS",
        help="TPU name or grpc:// address for --strategy tpu (None: this VM's TPU)",
    )


def _add_output_options(group):
    group.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="checkpoint every N iterations (0: at epoch ends)",
    )
    group.add_argument(
        "--keep-checkpoints",
        type=int,
        default=3,
        metavar="N",
        help="keep the last N checkpoints in RUN/checkpoints/ (named by "
        "iteration); RUN/checkpoint.keras is always the latest (0: only it)",
    )
    group.add_argument(
        "--evaluate-every",
        type=int,
        default=0,
        metavar="N",
        help="also evaluate the generators (as the final evaluation does) every "
        "N epochs, for TensorBoard and --best-by (0: only at the end)",
    )
    group.add_argument(
        "--best-by",
        default=None,
        metavar="{" + ",".join(BEST_BY) + "}",
        help="keep the checkpoint whose best generator scored best on this "
        "measure in RUN/best.keras (and RUN/best.json); inception_score and "
        "entropy: higher is better, fid, total_variation and l2: lower; "
        "needs --evaluate-every",
    )
    group.add_argument(
        "--tensorboard",
        default=None,
        metavar="DIR",
        help="TensorBoard log folder (default: RUN/tensorboard): the losses, the "
        "counts, the evaluations, sample grids, the gradient noise",
    )
    group.add_argument(
        "--no-tensorboard", action="store_true", help="write no TensorBoard logs"
    )
    group.add_argument(
        "--log-every",
        type=int,
        default=10,
        metavar="N",
        help="write the losses to TensorBoard every N iterations (their mean "
        "over those N)",
    )
    group.add_argument(
        "--gradient-noise-every",
        type=int,
        default=0,
        metavar="N",
        help="every N iterations, measure the second moment and variance of the "
        "method's gradient estimate over 10 minibatches, for TensorBoard (0: "
        "never)",
    )
    group.add_argument(
        "--no-evaluate",
        action="store_true",
        help="skip the final Inception Score (MNIST-like data only)",
    )
    group.add_argument("--verbose", type=int, default=1, help="Keras fit verbosity")


def _add_folder_options(group):
    root, latest = rundir.RUNS_ROOT, rundir.LATEST
    group.add_argument(
        "--resume",
        action="store_true",
        help="continue the run whose checkpoint is in --out (default: "
        f"{root}/{latest}; its saved settings are used; --epochs/--steps "
        "may extend it)",
    )
    group.add_argument(
        "--data-dir",
        default=None,
        help="TFDS data folder (also where a folder:PATH dataset's prepared "
        "images are cached; default for those: ~/.keras/keras_svre/folders)",
    )
    group.add_argument(
        "--out",
        default=None,
        help=f"the run folder (default: a new {root}/<date-time> per run, with "
        f"{root}/{latest} pointing at the newest; with --resume: the run "
        f"{root}/{latest} points at)",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an --out folder that holds one, deleting that "
        "run's files (without it such a folder is refused)",
    )


def check_options(args):
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
    if args.gradient_noise_every and args.no_tensorboard:
        raise UsageError(
            "--gradient-noise-every writes its measurements to TensorBoard: drop "
            "--no-tensorboard or --gradient-noise-every"
        )
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


def _check_options_with(args, config):
    """The options that depend on the run's settings, before any data is read."""
    from keras_svre import data

    if args.evaluate_every and config.dataset.startswith(data.FOLDER_PREFIX):
        raise UsageError(
            "--evaluate-every scores with an MNIST classifier, which says nothing "
            "of a folder of your own images: drop --evaluate-every (and --best-by) "
            "for this dataset"
        )


def run(args) -> dict:
    """Runs `keras-svre train`; returns the summary written to metrics.json.

    The settings are the run configuration (`keras_svre.run.RunConfig`):
    its defaults, then `--preset`, then `--config`, then the flags given.
    Training is `keras_svre.run.train_phases`: one `fit` call per epoch,
    epoch `e` reading the data in an order drawn from `(seed, e)` alone, so a
    run resumed from a checkpoint (`--resume`) reads exactly what the
    uninterrupted run would have.
    """
    check_options(args)
    # Nothing in the run folder is touched before every setting has passed
    # its checks (data, networks, batch sizes): a command that fails leaves a
    # previous run as it was.
    out = rundir.choose(args.out, args.resume, args.overwrite)
    config = settings_lib.run_config(args, out)
    _check_options_with(args, config)
    training = Training(args, config, out, strategy_lib.make_strategy(args))
    training.prepare()
    return training.run()
