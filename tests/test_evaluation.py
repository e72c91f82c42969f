"""Evaluation callbacks: gradient-estimate variance and generator evaluation."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_svre
from keras_svre.evaluation import GeneratorEvaluation, GradientVariance

N, BATCH, LATENT, SIDE = 64, 16, 4, 4


def tiny_gan(seed=0):
    """A Dense GAN on 4x4x1 images (no BatchNorm, no randomness in the step)."""
    keras.utils.set_random_seed(seed)
    generator = keras.Sequential(
        [
            keras.Input((LATENT,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(SIDE * SIDE, activation="tanh"),
            keras.layers.Reshape((SIDE, SIDE, 1)),
        ],
        name="generator",
    )
    discriminator = keras.Sequential(
        [
            keras.Input((SIDE, SIDE, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1),
        ],
        name="discriminator",
    )
    return keras_svre.GAN(generator, discriminator, num_examples=N, seed=seed)


def real_images(seed=1):
    rng = np.random.default_rng(seed)
    return np.tanh(rng.normal(size=(N, SIDE, SIDE, 1))).astype("float32")


def finite_sum(images, batch_size=BATCH, shuffle=True):
    dataset = tf.data.Dataset.from_tensor_slices((np.arange(N, dtype="int32"), images))
    if shuffle:
        dataset = dataset.shuffle(N, seed=0)
    return dataset.batch(batch_size, drop_remainder=True)


def tiny_classifier(num_classes=3, seed=0):
    """Images in [0, 1] -> class probabilities, with a `features` layer."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((SIDE, SIDE, 1))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(6, activation="relu", name="features")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs)


def tensorboard_tags(directory):
    tags = set()
    for path in directory.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tags.add(value.tag)
                assert value.metadata.plugin_data.plugin_name == "scalars"
    return tags


def measured(gan, dataset, num_batches=4):
    callback = GradientVariance(dataset, every=1, num_batches=num_batches)
    callback.set_model(gan)
    batches = callback.next_batches()
    values = callback.measure_batches(batches)
    return callback, batches, values


# --------------------------------------------------------------------------
# GradientVariance
# --------------------------------------------------------------------------


def test_svre_estimate_has_zero_variance_at_the_snapshot_and_se_does_not():
    data = finite_sum(real_images())
    players = ("generator", "discriminator")

    svre = tiny_gan()
    svre.compile(optimizer=keras_svre.SVRE(0.01))
    svre.take_snapshot(finite_sum(real_images(), shuffle=False))
    _, _, svre_values = measured(svre, data)

    # Stochastic extragradient (SGDA's estimate is the same `F_i(w)`).
    plain = tiny_gan()
    plain.compile(optimizer=keras_svre.Extragradient(0.01))
    _, _, plain_values = measured(plain, data)
    for p in players:
        # Same networks, same point, same minibatches: the plain estimate is
        # noisy...
        variance = plain_values[f"grad_variance_{p}"]
        assert variance > 1e-3 * plain_values[f"grad_second_moment_{p}"]
    for p in players:
        # ... SVRE's at the snapshot is the full mean on every minibatch.
        assert svre_values[f"grad_second_moment_{p}"] > 0
        assert svre_values[f"grad_variance_{p}"] == pytest.approx(0.0, abs=1e-12)


def test_gradient_variance_matches_numpy():
    gan = tiny_gan()
    gan.compile(optimizer=keras_svre.SVRE(0.05))
    snapshot = finite_sum(real_images(), shuffle=False)
    data = finite_sum(real_images())
    gan.take_snapshot(snapshot)
    # Move away from the snapshot so that the SVRE estimate is noisy too.
    gan.fit(data, epochs=1, steps_per_epoch=2, snapshot_data=snapshot, verbose=0)
    callback, batches, values = measured(gan, data, num_batches=5)
    for p in ("generator", "discriminator"):
        estimates = []
        for m in range(5):
            batch = tf.nest.map_structure(lambda x, m=m: x[m], batches)
            grads = gan.gradient_estimate(batch)[p]
            estimates.append(np.concatenate([np.ravel(g.numpy()) for g in grads]))
        estimates = np.asarray(estimates, dtype=np.float64)
        second_moment = np.mean(np.sum(estimates**2, axis=1))
        variance = np.mean(np.sum((estimates - estimates.mean(0)) ** 2, axis=1))
        assert values[f"grad_second_moment_{p}"] == pytest.approx(
            second_moment, rel=1e-5
        )
        assert values[f"grad_variance_{p}"] == pytest.approx(variance, rel=1e-4)
        assert variance > 0


def test_gradient_variance_logs_during_fit(tmp_path):
    gan = tiny_gan()
    gan.compile(optimizer=keras_svre.Extragradient(0.01))
    data = finite_sum(real_images())
    callback = GradientVariance(
        data,
        every=2,
        num_batches=3,
        log_path=tmp_path / "variance.jsonl",
        tensorboard_dir=tmp_path / "tb",
    )
    # 4 batches per epoch -> 2 extragradient iterations per epoch.
    history = gan.fit(data, epochs=3, callbacks=[callback], verbose=0)
    assert [r["iteration"] for r in callback.records] == [2, 4, 6]
    lines = (tmp_path / "variance.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [2, 4, 6]
    for key in (
        "grad_second_moment_generator",
        "grad_variance_generator",
        "grad_second_moment_discriminator",
        "grad_variance_discriminator",
    ):
        assert len(history.history[key]) == 3
        assert all(math.isfinite(v) for v in history.history[key])
    assert tensorboard_tags(tmp_path / "tb") == set(callback.records[0]) - {
        "iteration",
        "epoch",
        "seconds",
        "measure_seconds",
    }


def test_gradient_variance_arguments():
    with pytest.raises(TypeError, match="tf.data.Dataset"):
        GradientVariance(np.zeros((4, 2)), every=1)
    with pytest.raises(ValueError, match="`num_batches` must be a positive integer"):
        GradientVariance(finite_sum(real_images()), every=1, num_batches=0)
    with pytest.raises(ValueError, match="`every` must be a positive integer"):
        GradientVariance(finite_sum(real_images()), every=0)


# --------------------------------------------------------------------------
# GeneratorEvaluation
# --------------------------------------------------------------------------


def evaluation(tmp_path, **kwargs):
    defaults = dict(
        every=3,
        real_images=real_images(),
        classifier=tiny_classifier(),
        num_samples=40,
        splits=2,
        batch_size=16,
        log_path=tmp_path / "evaluation.jsonl",
        tensorboard_dir=tmp_path / "tb",
    )
    defaults.update(kwargs)
    return GeneratorEvaluation(**defaults)


def test_generator_evaluation_logs_keys_files_and_history(tmp_path):
    gan = tiny_gan()
    gan.compile(optimizer=keras.optimizers.Adam(1e-3))
    callback = evaluation(tmp_path, best_path=tmp_path / "best.keras")
    # 4 iterations per epoch, 2 epochs: evaluations at 3, 6 and at the end (8).
    history = gan.fit(
        finite_sum(real_images()), epochs=2, callbacks=[callback], verbose=0
    )

    assert [r["iteration"] for r in callback.records] == [3, 6, 8]
    expected = {
        f"{measure}_{which}"
        for measure in ("is", "is_std", "fid", "entropy", "total_variation", "l2")
        for which in ("current", "average", "ema")
    }
    assert set(callback.keys) == expected
    for key in expected:
        # One value per epoch, the last one measured in it.
        assert history.history[key] == [
            callback.records[0][key],
            callback.records[2][key],
        ]
    record = callback.records[-1]
    assert 1.0 <= record["is_current"] <= 3.0
    assert record["fid_average"] >= 0.0
    assert 0.0 <= record["entropy_ema"] <= math.log(3) + 1e-9

    lines = [
        json.loads(x) for x in (tmp_path / "evaluation.jsonl").read_text().splitlines()
    ]
    assert [x["iteration"] for x in lines] == [3, 6, 8]
    assert expected <= set(lines[0])
    assert tensorboard_tags(tmp_path / "tb") == set(callback.records[0]) - {
        "iteration",
        "epoch",
        "seconds",
        "measure_seconds",
    }

    best = keras.models.load_model(tmp_path / "best.keras")
    assert best.output_shape == (None, SIDE, SIDE, 1)
    assert callback.best == max(r["is_average"] for r in callback.records)
    assert not list(tmp_path.glob(".best.tmp*"))


def test_generator_evaluation_with_several_classifiers(tmp_path):
    gan = tiny_gan()
    gan.compile(optimizer=keras.optimizers.SGD(0.01))
    callback = evaluation(
        tmp_path,
        every=100,
        real_images=finite_sum(real_images(), shuffle=False),
        classifier={"a": tiny_classifier(seed=1), "b": tiny_classifier(5, seed=2)},
        generators=("ema",),
        monitor="fid_ema_b",
        log_path=None,
        tensorboard_dir=None,
    )
    history = gan.fit(
        finite_sum(real_images()), epochs=1, callbacks=[callback], verbose=0
    )
    # No multiple of `every` was reached: evaluated once, at the end.
    assert [r["iteration"] for r in callback.records] == [4]
    assert set(callback.keys) == {
        f"{m}_ema_{c}"
        for m in ("is", "is_std", "fid", "entropy", "total_variation", "l2")
        for c in ("a", "b")
    }
    assert history.history["is_ema_b"] == [callback.records[0]["is_ema_b"]]
    assert callback.records[0]["is_ema_b"] <= 5.0


@pytest.mark.parametrize(
    "monitor, scores, best_call",
    [("is_average", [2.0, 3.0, 1.0], 1), ("fid_average", [5.0, 3.0, 4.0], 1)],
)
def test_best_generator_is_kept(tmp_path, monitor, scores, best_call):
    gan = tiny_gan()
    gan.compile(optimizer=keras.optimizers.SGD(0.01))
    callback = evaluation(
        tmp_path,
        generators=("average",),
        monitor=monitor,
        best_path=tmp_path / "g.keras",
    )
    callback.set_model(gan)
    measure = "inception_score" if monitor.startswith("is") else "fid"
    values = iter(scores)
    callback._scores = lambda name, images: {measure: next(values)}
    kernels = []
    for call in range(3):
        # A different averaged generator at every evaluation.
        for v in gan.generator_average:
            v.assign(np.full(v.shape, 0.1 * (call + 1), dtype="float32"))
        kernels.append([np.asarray(v) for v in gan.generator_average])
        callback.evaluate()
    assert callback.best == scores[best_call]
    saved = keras.models.load_model(tmp_path / "g.keras")
    for weight, expected in zip(saved.trainable_weights, kernels[best_call]):
        np.testing.assert_array_equal(np.asarray(weight), expected)
    assert not list(tmp_path.glob(".g.tmp*"))


def test_generator_evaluation_arguments():
    with pytest.raises(ValueError, match="`monitor` must be an Inception Score or FID"):
        GeneratorEvaluation(every=1, monitor="fid_average")  # no real images: no FID
    with pytest.raises(ValueError, match="`monitor` must be"):
        GeneratorEvaluation(every=1, monitor="entropy_average")
    with pytest.raises(ValueError, match="`best_path` must end in `.keras`"):
        GeneratorEvaluation(every=1, best_path="best.h5")
    with pytest.raises(ValueError, match="`generators` must be distinct names"):
        GeneratorEvaluation(every=1, generators=("average", "mean"))
    with pytest.raises(ValueError, match="`num_samples` must be at least `splits`"):
        GeneratorEvaluation(every=1, num_samples=5, splits=10)
    with pytest.raises(ValueError, match="`every` must be a positive integer"):
        GeneratorEvaluation(every=0)


def test_default_classifier_needs_a_known_image_shape(tmp_path):
    gan = tiny_gan()
    gan.compile(optimizer=keras.optimizers.SGD(0.01))
    callback = GeneratorEvaluation(every=1, num_samples=20, splits=2)
    callback.set_model(gan)
    with pytest.raises(ValueError, match="No default evaluation classifier"):
        callback.evaluate()
