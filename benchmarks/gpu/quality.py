"""A short MNIST quality run on whichever backend Keras runs (the GPU script's second part).

    KERAS_BACKEND=jax python benchmarks/gpu/quality.py --width 64 --epochs 6

Trains one run (`keras_svre.run.train`: the warm start, then the method) on
the offline digits, then scores the EMA, uniform-average and current
generators with the project's MNIST classifier
(`saved_models/mnist_classifier.keras`): Inception Score, FID against the
real digits, label entropy. Needs no TensorFlow (on JAX the digits are NumPy
minibatches) and writes one JSON file.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import keras
import numpy as np

import keras_svre
from keras_svre import metrics


def _device() -> str:
    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend()
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="svre-vrad")
    parser.add_argument("--warm-start-method", default="adam")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--warm-start-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--take", type=int, default=None)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    config = keras_svre.run.RunConfig(
        method=args.method,
        warm_start_method=args.warm_start_method,
        width=args.width,
        epochs=args.epochs,
        warm_start_epochs=args.warm_start_epochs,
        batch_size=args.batch_size,
        take=args.take,
        seed=args.seed,
    )
    start = time.perf_counter()
    gan, finite_sum, reports, history = keras_svre.run.train(config, verbose=0)
    training_s = time.perf_counter() - start

    classifier = metrics.load_mnist_classifier()
    real = np.concatenate(
        [finite_sum.snapshot[i][1] for i in range(len(finite_sum.snapshot))]
    )
    features, _ = metrics.classifier_features_and_probabilities(
        classifier, (real + 1.0) / 2.0
    )
    real_statistics = metrics.feature_statistics(features)
    evaluation = {}
    for which in ("ema", "average", "current"):
        images = (gan.generate(args.samples, which=which, seed=args.seed) + 1.0) / 2.0
        scores = metrics.evaluate_images(
            np.clip(images, 0.0, 1.0), classifier, real_statistics
        )
        evaluation[which] = {k: round(float(v), 4) for k, v in scores.items()}
    iterations = sum(r["iterations"] for r in reports)
    result = {
        "backend": keras.backend.backend(),
        "device": _device(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "config": config.to_dict(),
        "phases": reports,
        "iterations": iterations,
        "training_s": round(training_s, 1),
        "seconds_per_iteration": round(training_s / max(iterations, 1), 4),
        "final_losses": {k: float(v[-1]) for k, v in history.history.items()},
        "evaluation": evaluation,
        "real_examples": int(len(real)),
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
