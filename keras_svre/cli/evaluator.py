"""The evaluation of `keras-svre train`: each generator scored with the
project's MNIST classifier (Inception Score, FID, label measures)."""

from __future__ import annotations

import time


def evaluable(config, finite_sum) -> bool:
    """Whether the MNIST classifier can score the run's images."""
    from keras_svre import data

    if config.dataset.startswith(data.FOLDER_PREFIX):
        return False
    return tuple(finite_sum.image_shape) == (28, 28, 1)


class Evaluator:
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


def flat_evaluation(evaluation) -> dict:
    """`{"ema": {"fid": v}}` as `{"fid_ema": v}` (the log keys)."""
    return {
        f"{measure}_{which}": value
        for which, scores in evaluation.items()
        if isinstance(scores, dict)
        for measure, value in scores.items()
    }
