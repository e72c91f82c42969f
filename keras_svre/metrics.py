"""Sample-quality metrics for GANs: Inception Score, FID and label histograms.

The numerical parts (Inception Score, Frechet distance, label-histogram
measures) are plain NumPy on arrays of class probabilities or features, so
they can be checked by hand and used with any classifier. The Keras parts
build or load the classifiers those arrays come from:

- `load_mnist_classifier`: the project's own small MNIST CNN
  (`saved_models/mnist_classifier.keras`, made by
  `examples/train_mnist_classifier.py`).
- `reference_mnist_classifier`: the MLP 784-256-256-10 that the SVRE paper
  scores MNIST samples with, rebuilt in Keras from its weights.
- `inception_model`: Keras' InceptionV3 for 32x32 colour images.

A *classifier* here is a Keras model that maps images to class
probabilities and has a layer named `"features"` whose output is the feature
vector used for the Frechet distance (the penultimate layer).
`classifier_features_and_probabilities` reads both in one forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np

FEATURES_LAYER = "features"
"""Name of the layer whose output a classifier exposes as its features."""

DEFAULT_MNIST_CLASSIFIER_PATH = (
    Path(__file__).resolve().parents[1] / "saved_models" / "mnist_classifier.keras"
)

# Rows of a probability matrix must sum to 1 within this tolerance; float32
# softmax outputs are within ~1e-6, so this only catches real mistakes
# (logits, unnormalised scores).
_ROW_SUM_TOLERANCE = 1e-3

_REFERENCE_MLP_ARRAYS = {
    "model_fc1_weight": (256, 784),
    "model_fc1_bias": (256,),
    "model_fc2_weight": (256, 256),
    "model_fc2_bias": (256,),
    "model_out_weight": (10, 256),
    "model_out_bias": (10,),
}


# --------------------------------------------------------------------------
# Inception Score
# --------------------------------------------------------------------------


def inception_score(probabilities, splits: int = 10) -> tuple[float, float]:
    """Inception Score of a set of class-probability vectors.

    `IS = exp(E_x KL(p(y|x) || p(y)))`, with `p(y)` the mean of `p(y|x)` over
    the split. The samples are cut, in order, into `splits` contiguous parts
    (part `k` is rows `k*N//splits` to `(k+1)*N//splits`, so every sample is
    used and part sizes differ by at most one, as in the SVRE reference code);
    the score is computed on each part and the mean and standard deviation
    over parts are returned. Terms with `p(y|x) = 0` contribute 0
    (`0 log 0 = 0`). Pass the samples in random order: parts of samples
    sorted by class would each hold one class and score about 1.

    Args:
        probabilities: Array-like of shape `[N, C]`: one row of class
            probabilities per sample (non-negative, each row summing to 1).
        splits: Number of parts the samples are cut into. Defaults to 10.

    Returns:
        `(mean, std)` of the score over the parts. The score lies in
        `[1, C]`: 1 when every sample gets the same prediction, `C` for
        confident predictions spread evenly over the classes.

    Raises:
        ValueError: if `probabilities` is not a 2-D array of finite,
            non-negative rows that sum to 1, if `splits` is not a positive
            integer, or if there are fewer samples than `splits`.

    References:
        - [Salimans et al., 2016](https://arxiv.org/abs/1606.03498)
    """
    probabilities = _validated_probabilities(probabilities)
    if isinstance(splits, bool) or not isinstance(splits, (int, np.integer)):
        raise ValueError(
            f"Argument `splits` must be a positive integer. Received: splits={splits}"
        )
    if splits < 1:
        raise ValueError(
            f"Argument `splits` must be a positive integer. Received: splits={splits}"
        )
    num_samples = probabilities.shape[0]
    if num_samples < splits:
        raise ValueError(
            "The Inception Score needs at least `splits` samples (one per "
            f"split). Received: {num_samples} samples, splits={splits}."
        )
    scores = []
    for k in range(splits):
        part = probabilities[
            k * num_samples // splits : (k + 1) * num_samples // splits
        ]
        marginal = part.mean(axis=0, keepdims=True)
        # Terms with p(y|x) = 0 get a ratio of 1, i.e. contribute 0; wherever
        # p(y|x) > 0 the marginal is > 0 too.
        ratio = np.divide(part, marginal, out=np.ones_like(part), where=part > 0)
        kl = np.sum(part * np.log(ratio), axis=1)
        scores.append(math.exp(float(np.mean(kl))))
    return float(np.mean(scores)), float(np.std(scores))


def _validated_probabilities(probabilities) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(
            "Expected class probabilities of shape [num_samples, num_classes]. "
            f"Received an array of shape {probabilities.shape}."
        )
    if probabilities.shape[0] == 0 or probabilities.shape[1] == 0:
        raise ValueError(
            "Expected a non-empty array of class probabilities. "
            f"Received shape {probabilities.shape}."
        )
    if not np.all(np.isfinite(probabilities)):
        raise ValueError("Class probabilities must be finite. Received NaN or inf.")
    if np.any(probabilities < 0):
        raise ValueError(
            "Class probabilities must be non-negative (pass softmax outputs, "
            f"not logits). Received a minimum of {probabilities.min():.6g}."
        )
    row_sums = probabilities.sum(axis=1)
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    if abs(row_sums[worst] - 1.0) > _ROW_SUM_TOLERANCE:
        raise ValueError(
            "Each row of class probabilities must sum to 1 (within "
            f"{_ROW_SUM_TOLERANCE}). Received row {worst} summing to "
            f"{row_sums[worst]:.6g}."
        )
    return probabilities


# --------------------------------------------------------------------------
# Frechet distance (FID)
# --------------------------------------------------------------------------


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of a set of feature vectors.

    Args:
        features: Array-like of shape `[N, D]`, one feature vector per sample.

    Returns:
        `(mean, covariance)`: float64 arrays of shapes `[D]` and `[D, D]`. The
        covariance is the unbiased sample covariance (divides by `N - 1`).

    Raises:
        ValueError: if `features` is not a finite 2-D array, or has fewer
            than 2 samples (a covariance needs at least 2).
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(
            "Expected features of shape [num_samples, feature_dim]. "
            f"Received an array of shape {features.shape}."
        )
    if features.shape[0] < 2:
        raise ValueError(
            "Feature statistics need at least 2 samples to estimate a "
            f"covariance. Received {features.shape[0]} sample(s)."
        )
    if not np.all(np.isfinite(features)):
        raise ValueError("Features must be finite. Received NaN or inf.")
    mean = features.mean(axis=0)
    covariance = np.atleast_2d(np.cov(features, rowvar=False))
    return mean, covariance


def frechet_distance_from_statistics(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between two Gaussians given by mean and covariance.

    `d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2)
    - 2 tr((sigma1 sigma2)^(1/2))`.

    Args:
        mu1: Mean of the first set, shape `[D]`.
        sigma1: Covariance of the first set, shape `[D, D]`.
        mu2: Mean of the second set, shape `[D]`.
        sigma2: Covariance of the second set, shape `[D, D]`.

    Returns:
        The squared Frechet distance (what is reported as FID), a
        non-negative float. Singular covariances (fewer samples than
        dimensions, or features confined to a subspace) are handled exactly.

    Raises:
        ValueError: if the shapes do not match or a value is not finite.

    References:
        - [Heusel et al., 2017](https://arxiv.org/abs/1706.08500)
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    dim = mu1.shape[0]
    if mu1.ndim != 1 or mu2.shape != (dim,):
        raise ValueError(
            "Expected two means of the same shape [D]. "
            f"Received shapes {mu1.shape} and {mu2.shape}."
        )
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"Expected two covariances of shape [D, D] = [{dim}, {dim}]. "
            f"Received shapes {sigma1.shape} and {sigma2.shape}."
        )
    for name, value in (
        ("mu1", mu1),
        ("sigma1", sigma1),
        ("mu2", mu2),
        ("sigma2", sigma2),
    ):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"`{name}` must be finite. Received NaN or inf.")

    # tr((S1 S2)^(1/2)) without a general matrix square root: S1 S2 is similar
    # to (or, for a singular S1, has the same non-zero eigenvalues as) the
    # symmetric PSD matrix M = S1^(1/2) S2 S1^(1/2), so the trace is the sum
    # of the square roots of M's eigenvalues. Both steps use `eigh` on
    # symmetric matrices, which is backward stable and never produces complex
    # values, so rank-deficient covariances need no eps*I offset (which would
    # bias the result) and no imaginary parts have to be dropped.
    # Eigenvalues that come out slightly negative through rounding are
    # clipped to 0.
    sqrt_sigma1 = _symmetric_psd_sqrt(sigma1)
    middle = sqrt_sigma1 @ _symmetrize(sigma2) @ sqrt_sigma1
    eigenvalues = np.linalg.eigvalsh(_symmetrize(middle))
    trace_sqrt_product = float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))

    difference = mu1 - mu2
    distance = (
        float(difference @ difference)
        + float(np.trace(sigma1))
        + float(np.trace(sigma2))
        - 2.0 * trace_sqrt_product
    )
    # Identical statistics can land a rounding error below 0.
    return max(distance, 0.0)


def frechet_distance(features_a, features_b) -> float:
    """Frechet distance between two sets of features (FID on Inception features).

    Args:
        features_a: Array-like of shape `[N_a, D]`.
        features_b: Array-like of shape `[N_b, D]`.

    Returns:
        The squared Frechet distance between Gaussians fitted to each set.

    Raises:
        ValueError: if a set has fewer than 2 samples, or the feature
            dimensions differ.
    """
    mu1, sigma1 = feature_statistics(features_a)
    mu2, sigma2 = feature_statistics(features_b)
    if mu1.shape != mu2.shape:
        raise ValueError(
            "Both feature sets must have the same feature dimension. "
            f"Received {mu1.shape[0]} and {mu2.shape[0]}."
        )
    return frechet_distance_from_statistics(mu1, sigma1, mu2, sigma2)


def _symmetrize(matrix: np.ndarray) -> np.ndarray:
    return 0.5 * (matrix + matrix.T)


def _symmetric_psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    eigenvalues, eigenvectors = np.linalg.eigh(_symmetrize(matrix))
    roots = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (eigenvectors * roots) @ eigenvectors.T


# --------------------------------------------------------------------------
# Label histogram
# --------------------------------------------------------------------------


def label_histogram_metrics(
    probabilities_or_labels, num_classes: int | None = None
) -> dict[str, float]:
    """How far the histogram of predicted labels is from uniform.

    These are the mode-coverage measures the SVRE reference code logs on
    MNIST next to the Inception Score. With `h` the normalised histogram of
    predicted labels and `u` the uniform distribution over `C` classes:

    - `entropy`: `-sum_c h_c log h_c` (natural log, `0 log 0 = 0`); `log C`
      when every class is predicted equally often.
    - `total_variation`: `0.5 * sum_c |h_c - u_c|`, in `[0, 1 - 1/C]`.
    - `l2`: `sum_c (h_c - u_c)^2`. Note: this is the *squared* Euclidean
      distance, as the reference code computes it, so that the numbers are
      comparable with the paper's.

    Args:
        probabilities_or_labels: Either class scores of shape `[N, C]`
            (probabilities, or logits: only the argmax of each row is used),
            or integer labels of shape `[N]`.
        num_classes: Number of classes `C`. Required for integer labels
            (classes that are never predicted still count); for a 2-D array it
            defaults to the number of columns and must equal it if given.

    Returns:
        A dict with float values for the keys `"entropy"`,
        `"total_variation"` and `"l2"`.

    Raises:
        ValueError: on empty input, a wrong rank, labels out of range, a
            missing or inconsistent `num_classes`.
    """
    values = np.asarray(probabilities_or_labels)
    if values.size == 0:
        raise ValueError("Expected at least one sample. Received an empty array.")
    if num_classes is not None and (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(
            "Argument `num_classes` must be a positive integer. "
            f"Received: num_classes={num_classes}"
        )
    if values.ndim == 2:
        if num_classes is not None and num_classes != values.shape[1]:
            raise ValueError(
                "Argument `num_classes` must equal the number of columns of the "
                f"class scores. Received: num_classes={num_classes} for scores of "
                f"shape {values.shape}."
            )
        num_classes = values.shape[1]
        labels = np.argmax(values, axis=1)
    elif values.ndim == 1:
        if not np.issubdtype(values.dtype, np.integer):
            raise ValueError(
                f"1-D input must hold integer labels. Received dtype {values.dtype}."
            )
        if num_classes is None:
            raise ValueError(
                "Argument `num_classes` is required with integer labels, since "
                "classes that are never predicted must still count."
            )
        if values.min() < 0 or values.max() >= num_classes:
            raise ValueError(
                f"Labels must lie in [0, {num_classes}). Received labels from "
                f"{values.min()} to {values.max()}."
            )
        labels = values
    else:
        raise ValueError(
            "Expected class scores of shape [N, C] or integer labels of shape "
            f"[N]. Received an array of shape {values.shape}."
        )

    histogram = np.bincount(labels, minlength=num_classes) / labels.shape[0]
    uniform = 1.0 / num_classes
    nonzero = histogram[histogram > 0]
    entropy = float(-np.sum(nonzero * np.log(nonzero)))
    return {
        "entropy": entropy,
        "total_variation": float(0.5 * np.sum(np.abs(histogram - uniform))),
        "l2": float(np.sum((histogram - uniform) ** 2)),
    }


# --------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------


def load_mnist_classifier(path: str | Path | None = None) -> keras.Model:
    """Loads the project's MNIST evaluation classifier.

    Args:
        path: Path of a `.keras` file. Defaults to the repository's
            `saved_models/mnist_classifier.keras`.

    Returns:
        A Keras model mapping images `[N, 28, 28, 1]` (float32 in `[0, 1]`)
        to softmax probabilities `[N, 10]`, with a layer named `"features"`
        (see `classifier_features_and_probabilities`).

    Raises:
        FileNotFoundError: if the file does not exist (the message says how
            to regenerate it).
        ValueError: if the loaded model has no `"features"` layer.
    """
    path = DEFAULT_MNIST_CLASSIFIER_PATH if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No MNIST classifier at {path}. Regenerate it (about 2 minutes on a "
            "CPU, no download needed) with `python "
            "examples/train_mnist_classifier.py --out "
            f"{path}` from the repository root."
        )
    model = keras.models.load_model(path, compile=False)
    _features_layer(model)
    return model


def reference_mnist_classifier(npz_path: str | Path) -> keras.Model:
    """The SVRE paper's MNIST classifier (MLP 784-256-256-10), rebuilt in Keras.

    The weights are read from a NumPy archive of the authors' PyTorch model
    (arrays `model_fc1_weight`, `model_fc1_bias`, `model_fc2_weight`,
    `model_fc2_bias`, `model_out_weight`, `model_out_bias`; weights in
    PyTorch's `[out, in]` layout). The dropout layers of the original are
    inactive at inference and are left out. Use it for Inception Scores
    comparable with the paper's MNIST numbers.

    Args:
        npz_path: Path of the `.npz` archive.

    Returns:
        A Keras model mapping images `[N, 28, 28, 1]` (float32 in `[0, 1]`)
        to softmax probabilities `[N, 10]`. Its second hidden layer (256
        ReLU units) is named `"features"`.

    Raises:
        FileNotFoundError: if `npz_path` does not exist.
        ValueError: if an array is missing or has an unexpected shape.
    """
    npz_path = Path(npz_path)
    if not npz_path.is_file():
        raise FileNotFoundError(f"No classifier weights at {npz_path}.")
    with np.load(npz_path) as archive:
        arrays = {}
        for name, shape in _REFERENCE_MLP_ARRAYS.items():
            if name not in archive:
                raise ValueError(
                    f"{npz_path} has no array `{name}`. Expected the arrays "
                    f"{sorted(_REFERENCE_MLP_ARRAYS)}."
                )
            if archive[name].shape != shape:
                raise ValueError(
                    f"Array `{name}` in {npz_path} must have shape {shape}. "
                    f"Received {archive[name].shape}."
                )
            arrays[name] = archive[name].astype(np.float32)

    inputs = keras.Input(shape=(28, 28, 1), name="images")
    # Row-major flattening of [28, 28, 1] matches PyTorch's view of
    # [1, 28, 28] because there is a single channel.
    x = keras.layers.Flatten(name="flatten")(inputs)
    fc1 = keras.layers.Dense(256, activation="relu", name="fc1")
    x = fc1(x)
    fc2 = keras.layers.Dense(256, activation="relu", name=FEATURES_LAYER)
    x = fc2(x)
    out = keras.layers.Dense(10, activation="softmax", name="probabilities")
    outputs = out(x)
    model = keras.Model(inputs, outputs, name="reference_mnist_mlp")
    for layer, prefix in ((fc1, "model_fc1"), (fc2, "model_fc2"), (out, "model_out")):
        # Keras' Dense kernel is [in, out]; PyTorch's Linear weight is [out, in].
        layer.set_weights([arrays[f"{prefix}_weight"].T, arrays[f"{prefix}_bias"]])
    return model


def inception_model(
    weights: str | None = "imagenet",
    input_shape: tuple[int, int, int] = (32, 32, 3),
) -> keras.Model:
    """Keras InceptionV3 for scoring small colour images (IS and FID).

    Images in `[0, 1]` are resized (bilinear) to 299x299 and mapped to
    `[-1, 1]` as InceptionV3 expects. The 2048-d global average pool
    ("pool3") is exposed as the layer `"features"`.

    Note that Keras' ImageNet weights are not the TF-slim graph that the
    usual FID/IS code (and the SVRE paper) uses, so absolute numbers are
    comparable between runs of this project, not with published tables.

    Args:
        weights: `"imagenet"` (downloaded by Keras on first use), `None`
            for random weights, or a path to a weights file.
            Defaults to `"imagenet"`.
        input_shape: Shape of one input image. Defaults to `(32, 32, 3)`.

    Returns:
        A Keras model mapping images `[N, *input_shape]` to softmax
        probabilities `[N, 1000]`, with a layer named `"features"` of 2048
        units.
    """
    inception = keras.applications.InceptionV3(
        include_top=True, weights=weights, classifier_activation="softmax"
    )
    # Split InceptionV3 at its pooled features and re-apply its own
    # `predictions` layer on top: inner layers of a nested functional model
    # are not reachable from the outer one, so the features must be an
    # explicit node of the outer graph.
    pooled_features = keras.Model(
        inception.inputs,
        inception.get_layer("avg_pool").output,
        name="inception_v3_pool3",
    )
    inputs = keras.Input(shape=input_shape, name="images")
    x = keras.layers.Resizing(299, 299, interpolation="bilinear", name="resize")(inputs)
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="to_minus_one_one")(x)
    features = keras.layers.Identity(name=FEATURES_LAYER)(pooled_features(x))
    probabilities = inception.get_layer("predictions")(features)
    return keras.Model(inputs, probabilities, name="inception_classifier")


def classifier_features_and_probabilities(
    model: keras.Model, images, batch_size: int = 500
) -> tuple[np.ndarray, np.ndarray]:
    """Features (penultimate layer) and class probabilities in one pass.

    Args:
        model: A classifier: a Keras model returning softmax probabilities,
            with a layer named `"features"`.
        images: Array-like of images in the model's input shape, float32 in
            `[0, 1]` (e.g. `[N, 28, 28, 1]` for MNIST).
        batch_size: Images per forward pass. Defaults to 500 (lower it for
            InceptionV3, whose activations at 299x299 are large).

    Returns:
        `(features, probabilities)`: float32 NumPy arrays `[N, D]` and
        `[N, C]`.

    Raises:
        ValueError: if the model has no `"features"` layer, the images do not
            match the model's input shape, or `batch_size` is not positive.
    """
    if batch_size < 1:
        raise ValueError(
            f"Argument `batch_size` must be positive. Received: batch_size={batch_size}"
        )
    images = np.asarray(images, dtype=np.float32)
    expected = tuple(model.inputs[0].shape[1:])
    if images.ndim != len(expected) + 1 or any(
        want is not None and want != got
        for want, got in zip(expected, images.shape[1:], strict=True)
    ):
        raise ValueError(
            f"Expected images of shape [N, {', '.join(map(str, expected))}]. "
            f"Received shape {images.shape}."
        )
    # `model.input` (not `.inputs`) so the graph takes a bare tensor, as the
    # classifiers here have a single input.
    features_model = keras.Model(
        model.input, [_features_layer(model).output, model.outputs[0]]
    )
    features, probabilities = [], []
    for start in range(0, images.shape[0], batch_size):
        batch_features, batch_probabilities = features_model(
            images[start : start + batch_size], training=False
        )
        features.append(keras.ops.convert_to_numpy(batch_features))
        probabilities.append(keras.ops.convert_to_numpy(batch_probabilities))
    return np.concatenate(features), np.concatenate(probabilities)


def _features_layer(model: keras.Model) -> keras.layers.Layer:
    try:
        return model.get_layer(FEATURES_LAYER)
    except ValueError:
        raise ValueError(
            f"The classifier `{model.name}` has no layer named "
            f"'{FEATURES_LAYER}'. Name its penultimate layer '{FEATURES_LAYER}' "
            "so that its output can be used as features."
        ) from None


def evaluate_images(
    images,
    classifier: keras.Model,
    real_statistics: tuple[np.ndarray, np.ndarray] | Mapping | None = None,
    splits: int = 10,
    batch_size: int = 500,
) -> dict[str, float]:
    """All sample-quality metrics for a batch of generated images.

    Args:
        images: Generated images in the classifier's input shape, float32 in
            `[0, 1]`.
        classifier: A classifier (see `classifier_features_and_probabilities`).
        real_statistics: `(mean, covariance)` of the classifier's features on
            real images (from `feature_statistics`), or a mapping with keys
            `"mean"` and `"covariance"`. When given, the FID is included.
        splits: Number of parts for the Inception Score. Defaults to 10.
        batch_size: Images per forward pass. Defaults to 500.

    Returns:
        A dict with the keys `"inception_score"`, `"inception_score_std"`,
        `"entropy"`, `"total_variation"`, `"l2"`, and `"fid"` when
        `real_statistics` is given.

    Raises:
        ValueError: see `inception_score`, `feature_statistics` and
            `classifier_features_and_probabilities`.
    """
    features, probabilities = classifier_features_and_probabilities(
        classifier, images, batch_size=batch_size
    )
    score, score_std = inception_score(probabilities, splits=splits)
    results = {"inception_score": score, "inception_score_std": score_std}
    if real_statistics is not None:
        if isinstance(real_statistics, Mapping):
            real_mean = real_statistics["mean"]
            real_covariance = real_statistics["covariance"]
        else:
            real_mean, real_covariance = real_statistics
        mean, covariance = feature_statistics(features)
        results["fid"] = frechet_distance_from_statistics(
            mean, covariance, real_mean, real_covariance
        )
    results.update(label_histogram_metrics(probabilities))
    return results
