"""Fault injection (issue 12): each way a new user broke the library, one test each.

Every case asserts the one-sentence message and, for the command line, that
nothing on disk was lost. Sections: the CLI's run folder; non-finite values;
mixed precision; Keras callbacks that assume one optimizer; evaluation; raw
framework errors turned into sentences.
"""

import os
import pathlib
import re
import shutil
import socket
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_svre
from keras_svre import callbacks, cli, data
from tests.cli_helpers import fails_cleanly

TINY = ["--take", "128", "--batch-size", "64", "--width", "2"]
TINY += ["--no-evaluate", "--verbose", "0"]
# Plain SVRE from the first iteration (the default run warm-starts with Adam).
TINY += ["--method", "svre", "--warm-start-method", "none"]
N, LATENT = 64, 3


# --------------------------------------------------------------------------- #
# Helpers.
# --------------------------------------------------------------------------- #
@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory):
    """A folder holding a finished one-iteration run."""
    out = tmp_path_factory.mktemp("finished")
    argv = ["train", *TINY, "--steps", "1", "--data-dir", data_dir]
    assert cli.main([*argv, "--out", os.fspath(out)]) == 0
    return out


def _contents(folder):
    """`{relative path: bytes}` of every file under `folder`."""
    folder = pathlib.Path(folder)
    return {
        os.fspath(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _copy_run(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


def _networks(sigmoid=False, latent=LATENT, bounded=True):
    generator = keras.Sequential(
        [
            keras.Input((latent,)),
            keras.layers.Dense(16, activation="tanh" if bounded else None),
            keras.layers.Reshape((4, 4, 1)),
        ],
        name="g",
    )
    discriminator = keras.Sequential(
        [
            keras.Input((4, 4, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="sigmoid" if sigmoid else None),
        ],
        name="d",
    )
    return generator, discriminator


def _gan(optimizer=None, num_examples=N, **compile_kwargs):
    generator, discriminator = _networks()
    gan = keras_svre.GAN(generator, discriminator, num_examples=num_examples, seed=0)
    if optimizer is not None:
        compile_kwargs["optimizer"] = optimizer
    gan.compile(**compile_kwargs)
    return gan


def _images(n=N, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 4, 4, 1)).astype("float32")


def _indexed(images, batch_size=16, drop_remainder=True):
    examples = (np.arange(len(images)), images)
    dataset = tf.data.Dataset.from_tensor_slices(examples)
    return dataset.batch(batch_size, drop_remainder=drop_remainder)


def _weights(game):
    return [v.numpy().copy() for v in game.trainable_variables]


def _iterations(game):
    return game.iterations


@pytest.fixture
def policy():
    """Sets Keras' global dtype policy for one test, then restores float32."""
    try:
        yield keras.mixed_precision.set_global_policy
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --------------------------------------------------------------------------- #
# Data loss: the CLI's run folder.
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "bad, message",
    [
        (["--take", "10"], "Argument `batch_size` (64) is larger than the number"),
        (["--architecture", "dcgan32"], "but the networks take (32, 32, 3)"),
    ],
    ids=["batch-larger-than-data", "architecture-for-other-images"],
)
@pytest.mark.parametrize("overwrite", [False, True], ids=["plain", "overwrite"])
def test_a_bad_setting_leaves_a_finished_run_intact(
    capsys, finished_run, tmp_path, data_dir, bad, message, overwrite
):
    out = _copy_run(finished_run, tmp_path)
    before = _contents(out)
    argv = ["train", *TINY, *bad, "--data-dir", data_dir, "--out", os.fspath(out)]
    if overwrite:
        # Even with --overwrite, a command that fails deletes nothing.
        fails_cleanly(capsys, [*argv, "--overwrite"], message)
    else:
        fails_cleanly(capsys, argv, "already holds a run")
    assert _contents(out) == before


def test_a_new_run_in_a_folder_that_holds_one_is_refused(
    capsys, finished_run, tmp_path, data_dir
):
    out = _copy_run(finished_run, tmp_path)
    before = _contents(out)
    argv = ["train", *TINY, "--steps", "1", "--data-dir", data_dir]
    err = fails_cleanly(capsys, [*argv, "--out", os.fspath(out)], "already holds a run")
    assert "--resume" in err and "--overwrite" in err
    assert _contents(out) == before
    assert (out / "checkpoint.keras").exists() and (out / "metrics.csv").exists()


def test_overwrite_replaces_the_run(capsys, finished_run, tmp_path, data_dir):
    out = _copy_run(finished_run, tmp_path)
    argv = ["train", *TINY, "--steps", "1", "--seed", "7", "--data-dir", data_dir]
    assert cli.main([*argv, "--out", os.fspath(out), "--overwrite"]) == 0
    assert "deleting the run in" in capsys.readouterr().err
    import json

    assert json.loads((out / "run.json").read_text())["seed"] == 7
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 2


def test_overwrite_and_resume_together_are_refused(capsys, tmp_path):
    argv = ["train", "--resume", "--overwrite", "--out", os.fspath(tmp_path)]
    fails_cleanly(capsys, argv, "--overwrite starts a new run and --resume")


def test_default_out_is_a_new_folder_per_run_with_a_latest_link(
    capsys, tmp_path, monkeypatch, data_dir
):
    monkeypatch.chdir(tmp_path)
    argv = ["train", *TINY, "--steps", "1", "--data-dir", data_dir]
    assert cli.main(argv) == 0
    first_out = capsys.readouterr().out
    assert cli.main(argv) == 0
    second_out = capsys.readouterr().out
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if p.name != "latest")
    assert len(runs) == 2
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink() and latest.resolve() == runs[1].resolve()
    assert f"the run is in runs/{runs[0].name}" in first_out
    assert f"the run is in runs/{runs[1].name} (runs/latest points to it)" in second_out
    # --resume without --out continues the latest run.
    assert cli.main(["train", "--resume", "--steps", "2", "--data-dir", data_dir]) == 0
    model = keras.models.load_model(runs[1] / "model.keras")
    assert _iterations(model) == 2
    assert (runs[0] / "model.keras").exists()


def test_resume_without_out_needs_a_latest_run(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails_cleanly(capsys, ["train", "--resume"], "nothing to resume: no runs/latest")


@pytest.mark.parametrize(
    "out, message",
    [
        ("afile/sub", "afile is a file, not a folder"),
        ("/proc/keras-svre-test/run", "cannot be created"),
    ],
    ids=["below-a-file", "proc"],
)
def test_an_out_folder_that_cannot_be_created(
    capsys, tmp_path, monkeypatch, data_dir, out, message
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not a folder")
    argv = ["train", *TINY, "--steps", "1", "--data-dir", data_dir, "--out", out]
    fails_cleanly(capsys, argv, message)
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_sample_to_a_file_that_cannot_be_written(capsys, finished_run):
    argv = ["sample", "--model", os.fspath(finished_run / "model.keras")]
    fails_cleanly(capsys, [*argv, "--out", "/proc/x.npy"], "--out /proc/x.npy")


def test_a_network_dataset_without_network_fails_fast(capsys, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="cannot be reached"):
        data.prepare("mnist", data_dir=tmp_path / "tfds")
    argv = ["train", *TINY, "--dataset", "mnist", "--data-dir"]
    argv += [os.fspath(tmp_path / "tfds"), "--out", os.fspath(tmp_path / "run")]
    fails_cleanly(capsys, argv, "its download host storage.googleapis.com cannot")
    assert time.monotonic() - start < 60
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- #
# Silent failure: NaN.
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.SGD(0.1),
        lambda: keras_svre.Extragradient(0.1),
        lambda: keras_svre.SVRE(0.1, restart_probability=0.5),
    ],
    ids=["sgda", "se", "svre"],
)
def test_nan_images_stop_fit_at_the_first_iteration(optimizer):
    gan = _gan(optimizer())
    before = _weights(gan)
    nan_images = _indexed(np.full((N, 4, 4, 1), np.nan, "float32"))
    message = re.escape(
        "Training stopped at iteration 1: the loss of discriminator was NaN or "
        "infinite; the iteration was not applied: the game holds the weights "
        "after iteration 0."
    )
    with pytest.raises(callbacks.NonFiniteLossError, match=message):
        gan.fit(nan_images, epochs=1, verbose=0)
    assert _iterations(gan) == 0
    for a, b in zip(before, _weights(gan)):
        np.testing.assert_array_equal(a, b)


def test_callbacks_finish_before_the_non_finite_error(tmp_path):
    # The error comes at the end of training: the CSV log is written and closed.
    gan = _gan(keras.optimizers.SGD(0.1))
    log = keras.callbacks.CSVLogger(os.fspath(tmp_path / "log.csv"))
    nan_images = _indexed(np.full((N, 4, 4, 1), np.nan, "float32"))
    with pytest.raises(callbacks.NonFiniteLossError):
        gan.fit(nan_images, epochs=3, verbose=0, callbacks=[log])
    rows = (tmp_path / "log.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and "nan" in rows[1]
    assert log.csv_file.closed


def test_a_divergent_learning_rate_stops_fit_with_the_last_good_weights():
    # The learning rate, with an unbounded generator so it diverges.
    generator, discriminator = _networks(bounded=False)
    gan = keras_svre.GAN(generator, discriminator, num_examples=N, seed=0)
    gan.compile(optimizer=keras.optimizers.SGD(1e4))
    with pytest.raises(callbacks.NonFiniteLossError) as info:
        gan.fit(_indexed(_images()), epochs=20, verbose=0)
    failed = int(re.search(r"iteration (\d+)", str(info.value)).group(1))
    assert failed == _iterations(gan) + 1
    assert "the game holds the weights after iteration" in str(info.value)
    assert all(np.isfinite(w).all() for w in _weights(gan))


def test_keras_terminate_on_nan_sees_a_loss():
    fired = []

    class Spy(keras.callbacks.TerminateOnNaN):
        def on_batch_end(self, batch, logs=None):
            super().on_batch_end(batch, logs)
            fired.append(bool(self.model.stop_training))

    gan = _gan(keras.optimizers.SGD(0.1))
    history = gan.fit(_indexed(_images()), epochs=1, verbose=0, callbacks=[Spy()])
    assert np.isfinite(history.history["loss"][0]) and fired == [False] * 4
    nan_images = _indexed(np.full((N, 4, 4, 1), np.nan, "float32"))
    with pytest.raises(callbacks.NonFiniteLossError):
        gan.fit(nan_images, epochs=1, verbose=0, callbacks=[Spy()])
    assert fired[-1] is True


# --------------------------------------------------------------------------- #
# Mixed precision.
# --------------------------------------------------------------------------- #
METHODS = {
    "sgda": lambda: keras.optimizers.SGD(0.05),
    "ogda": lambda: keras_svre.Optimistic(0.05),
    "se": lambda: keras_svre.Extragradient(0.05),
    "svre": lambda: keras_svre.SVRE(0.05, restart_probability=0.5),
}


@pytest.mark.parametrize("method", list(METHODS))
def test_mixed_float16_skips_overflowing_iterations_and_halves_the_scale(
    policy, method
):
    policy("mixed_float16")
    # 2**40 overflows float16 gradients: the first iterations must be
    # skipped (extrapolation included) until the scale is small enough.
    optimizer = keras.optimizers.LossScaleOptimizer(
        METHODS[method](), initial_scale=2.0**40, dynamic_growth_steps=1000
    )
    gan = _gan(optimizer)
    # The method is the wrapped optimizer's: (extrapolates, variance_reduced).
    assert gan.dynamic_loss_scaling
    assert (gan.extrapolates, gan.variance_reduced) == {
        "sgda": (False, False),
        "ogda": (False, False),
        "se": (True, False),
        "svre": (True, True),
    }[method]
    assert not isinstance(gan.optimizer, keras.optimizers.LossScaleOptimizer)
    if method == "svre":
        # The snapshot pass overflows too: it halves the scale and redoes the
        # pass until its mean gradient is finite.
        gan.take_snapshot(_indexed(_images(), 16))
        assert float(gan.loss_scale.numpy()) < 2.0**40
        assert all(np.isfinite(v.numpy()).all() for v in gan.optimizer.variables)
        gan.loss_scale.assign(2.0**40)  # Now for the iteration itself.
    before = _weights(gan)
    gan.fit(_indexed(_images(), 4), epochs=1, steps_per_epoch=1, verbose=0)
    assert _iterations(gan) == 0
    assert float(gan.loss_scale.numpy()) == 2.0**39
    for a, b in zip(before, _weights(gan)):
        np.testing.assert_array_equal(a, b)
    assert int(gan.average_count.numpy()) == 0  # skipped: not averaged either
    gan.fit(_indexed(_images(), 4), epochs=3, verbose=0)
    assert _iterations(gan) > 0
    assert float(gan.loss_scale.numpy()) < 2.0**39
    after = _weights(gan)
    assert all(np.isfinite(w).all() for w in after)
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_mixed_float16_default_scaling_is_the_games_and_is_saved(policy, tmp_path):
    policy("mixed_float16")
    gan = _gan(keras_svre.SVRE(0.05, restart_probability=0.5))
    assert gan.dynamic_loss_scaling
    assert not isinstance(gan.optimizer, keras.optimizers.LossScaleOptimizer)
    assert float(gan.loss_scale.numpy()) == 2.0**15
    gan.fit(_indexed(_images()), epochs=1, verbose=0)
    gan.loss_scale.assign(1234.0)
    path = tmp_path / "gan.keras"
    gan.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.dynamic_loss_scaling
    assert float(loaded.loss_scale.numpy()) == 1234.0
    assert _iterations(loaded) == _iterations(gan) > 0


def test_loss_scale_grows_after_good_steps():
    # A wrapped optimizer is recognised (its method and its settings) in a
    # float32 game too; 4 good iterations with growth every 2 double it twice.
    optimizer = keras.optimizers.LossScaleOptimizer(
        keras_svre.SVRE(0.05, restart_probability=0.5),
        initial_scale=1.0,
        dynamic_growth_steps=2,
    )
    gan = _gan(optimizer)
    assert gan.variance_reduced and isinstance(gan.optimizer, keras_svre.SVRE)
    gan.fit(_indexed(_images(), 8), epochs=1, verbose=0)
    assert _iterations(gan) == 4
    assert float(gan.loss_scale.numpy()) == 4.0


def test_an_explicit_loss_scale_factor_is_kept(policy):
    policy("mixed_float16")
    gan = _gan(keras_svre.SVRE(0.05, restart_probability=0.5, loss_scale_factor=1024))
    assert gan.optimizer.loss_scale_factor == 1024
    assert not gan.dynamic_loss_scaling
    gan.fit(_indexed(_images()), epochs=1, verbose=0)
    assert all(np.isfinite(w).all() for w in _weights(gan))


def test_mixed_loss_scale_wrapping_is_refused():
    generator, discriminator = _networks()
    gan = keras_svre.GAN(generator, discriminator, num_examples=N)
    with pytest.raises(ValueError, match="wrapped in a `LossScaleOptimizer` or none"):
        gan.compile(
            generator_optimizer=keras.optimizers.LossScaleOptimizer(
                keras_svre.SVRE(0.01)
            ),
            discriminator_optimizer=keras_svre.SVRE(0.01),
        )


def test_mixed_bfloat16_trains(policy):
    policy("mixed_bfloat16")
    gan = _gan(keras_svre.SVRE(0.05, restart_probability=0.5))
    assert not gan.dynamic_loss_scaling
    history = gan.fit(_indexed(_images()), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert gan.generator.layers[0].compute_dtype == "bfloat16"


def test_cli_mixed_precision(capsys, tmp_path, data_dir, policy):
    out = tmp_path / "run"
    argv = ["train", *TINY, "--steps", "1", "--mixed-precision", "float16"]
    assert cli.main([*argv, "--data-dir", data_dir, "--out", os.fspath(out)]) == 0
    policy("float32")
    model = keras.models.load_model(out / "model.keras")
    assert model.dynamic_loss_scaling
    assert "float16" in {layer.compute_dtype for layer in model.generator.layers}


# --------------------------------------------------------------------------- #
# Keras callbacks that assume one optimizer.
# --------------------------------------------------------------------------- #
def _two_optimizer_gan():
    return _gan(
        generator_optimizer=keras_svre.SVRE(0.001, restart_probability=0.5),
        discriminator_optimizer=keras_svre.SVRE(0.04, restart_probability=0.5),
    )


def _rates(game):
    return [float(opt.learning_rate.numpy()) for opt in game.game_optimizers]


def test_learning_rate_scheduler_acts_on_every_player():
    gan = _two_optimizer_gan()
    halve = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)
    gan.fit(_indexed(_images()), epochs=2, verbose=0, callbacks=[halve])
    assert _rates(gan) == pytest.approx([0.001 / 4, 0.04 / 4])


def test_reduce_lr_on_plateau_acts_on_every_player_without_mode():
    gan = _two_optimizer_gan()
    # A min_delta no change can beat: a plateau after the first epoch.
    reduce = keras.callbacks.ReduceLROnPlateau(
        monitor="generator_loss", factor=0.5, patience=0, min_delta=1e9
    )
    gan.fit(_indexed(_images()), epochs=2, verbose=0, callbacks=[reduce])
    assert _rates(gan) == pytest.approx([0.001 / 2, 0.04 / 2])


def test_early_stopping_on_a_player_loss_needs_no_mode():
    gan = _two_optimizer_gan()
    stop = keras.callbacks.EarlyStopping(
        monitor="generator_loss", patience=0, min_delta=1e9
    )
    history = gan.fit(_indexed(_images()), epochs=5, verbose=0, callbacks=[stop])
    assert len(history.history["generator_loss"]) == 2
    assert stop.mode == "min"


def test_game_learning_rate_keeps_the_players_ratio():
    gan = _two_optimizer_gan()
    gan.learning_rate = 0.002
    assert _rates(gan) == pytest.approx([0.002, 0.08])
    assert gan.player_learning_rates == pytest.approx(
        {"generator": 0.002, "discriminator": 0.08}
    )


# --------------------------------------------------------------------------- #
# Evaluation.
# --------------------------------------------------------------------------- #
def test_evaluate_reports_the_players_losses_on_held_out_data():
    gan = _gan(keras_svre.SVRE(0.05, restart_probability=0.5))
    held_out = _indexed(_images(32, seed=5))
    first = gan.evaluate(held_out, verbose=0, return_dict=True)
    second = gan.evaluate(held_out, verbose=0, return_dict=True)
    assert set(first) == {"loss", "generator_loss", "discriminator_loss"}
    assert first == pytest.approx(second)  # Held-out latents are deterministic.
    assert first["loss"] == pytest.approx(
        first["generator_loss"] + first["discriminator_loss"], rel=1e-5
    )


def test_fit_with_validation_data():
    gan = _gan(keras_svre.Extragradient(0.05))
    history = gan.fit(
        _indexed(_images()),
        validation_data=_indexed(_images(32, seed=5)),
        epochs=1,
        verbose=0,
    )
    assert np.isfinite(history.history["val_generator_loss"][0])
    assert np.isfinite(history.history["val_discriminator_loss"][0])


def test_bad_validation_data_is_refused_before_training():
    gan = _gan(keras_svre.SVRE(0.05, restart_probability=0.5))
    labelled = tf.data.Dataset.from_tensor_slices((_images(), np.zeros(N))).batch(16)
    with pytest.raises(ValueError, match="The validation dataset must yield"):
        gan.fit(_indexed(_images()), validation_data=labelled, epochs=1, verbose=0)
    assert _iterations(gan) == 0
    assert int(gan.svre_optimizers[0].snapshots_taken.numpy()) == 0


# --------------------------------------------------------------------------- #
# Raw framework errors, now one sentence each.
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "optimizer",
    [lambda: keras.optimizers.SGD(0.1), lambda: keras_svre.SVRE(0.1)],
    ids=["sgda", "svre"],
)
def test_more_examples_than_num_examples(optimizer):
    gan = _gan(optimizer(), num_examples=N)
    with pytest.raises(ValueError, match="not below the GAN's num_examples=64"):
        gan.fit(_indexed(_images(2 * N)), epochs=1, verbose=0)


@pytest.mark.parametrize(
    "optimizer",
    [lambda: keras_svre.Extragradient(0.1), lambda: keras_svre.SVRE(0.1)],
    ids=["se", "svre"],
)
def test_a_smaller_last_batch_is_refused_before_training(optimizer):
    gan = _gan(optimizer(), num_examples=70)
    # 70 examples in batches of 20: 20, 20, 20, 10; the second pair differs.
    ragged = _indexed(_images(70), 20, drop_remainder=False)
    with pytest.raises(ValueError, match=r"drop_remainder=True\)`"):
        gan.fit(ragged, epochs=1, verbose=0)
    assert _iterations(gan) == 0
    if gan.svre_optimizers:
        assert int(gan.svre_optimizers[0].snapshots_taken.numpy()) == 0


def test_a_smaller_last_batch_of_unknown_count_is_one_sentence():
    gan = _gan(keras_svre.Extragradient(0.1), num_examples=70)
    ragged = _indexed(_images(70), 20, drop_remainder=False)
    unknown = ragged.filter(lambda index, image: True)  # cardinality unknown
    with pytest.raises(ValueError, match=r"drop_remainder=True\)`"):
        gan.fit(unknown, epochs=1, verbose=0)


def test_batches_of_unfixed_but_equal_size_train():
    gan = _gan(keras_svre.Extragradient(0.1))
    equal = _indexed(_images(), 16, drop_remainder=False)  # 4 full batches
    gan.fit(equal, epochs=1, verbose=0)
    assert _iterations(gan) == 2


def test_image_label_datasets():
    gan = _gan(keras_svre.SVRE(0.1))
    labelled = tf.data.Dataset.from_tensor_slices((_images(), np.zeros(N))).batch(16)
    with pytest.raises(ValueError, match=r"if it yields `\(image, label\)`"):
        gan.fit(labelled, epochs=1, verbose=0)


def test_an_empty_dataset_is_called_empty():
    gan = _gan(keras_svre.SVRE(0.1))
    with pytest.raises(ValueError, match="The training dataset is empty"):
        gan.fit(_indexed(_images(8), 16), epochs=1, verbose=0)


def test_a_dataset_shorter_than_one_iteration():
    gan = _gan(keras_svre.Extragradient(0.1))
    with pytest.raises(ValueError, match="uses 2 minibatches but the training"):
        gan.fit(_indexed(_images(16), 16), epochs=1, verbose=0)


def test_restart_probability_must_be_a_number():
    message = re.escape(
        "Argument `restart_probability` must be a number in the (0, 1] range. "
        "Received: restart_probability='0.5' (of type str)."
    )
    with pytest.raises(ValueError, match=message):
        keras_svre.SVRE(restart_probability="0.5")


def test_a_schedule_starting_negative_is_refused():
    schedule = keras.optimizers.schedules.ExponentialDecay(-0.1, 10, 0.5)
    with pytest.raises(ValueError, match="schedule must start positive"):
        keras_svre.SVRE(schedule)
    with pytest.raises(ValueError, match="schedule must start positive"):
        keras_svre.Extragradient(schedule)


def test_latent_dim_must_match_the_generator():
    generator, discriminator = _networks()
    with pytest.raises(ValueError, match=r"`latent_dim` \(5\) must match"):
        keras_svre.GAN(generator, discriminator, latent_dim=5, num_examples=N)


def test_a_discriminator_ending_in_a_sigmoid_is_refused():
    generator, discriminator = _networks(sigmoid=True)
    with pytest.raises(ValueError, match="The discriminator ends in a sigmoid"):
        keras_svre.GAN(generator, discriminator, num_examples=N)


def test_keras_optimizers_get_knows_the_game_optimizers():
    assert isinstance(keras.optimizers.get("svre"), keras_svre.SVRE)
    extragradient = keras.optimizers.get("extragradient")
    assert type(extragradient) is keras_svre.Extragradient
