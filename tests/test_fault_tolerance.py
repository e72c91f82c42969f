"""Fault tolerance: atomic checkpoints, and a run killed with SIGKILL then resumed."""

import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_svre
from keras_svre import callbacks

# 256 examples in batches of 16: one epoch is 8 SVRE iterations (2 batches
# each); checkpoints every 2 iterations fall inside the epochs.
RUN = [
    "--take",
    "256",
    "--width",
    "4",
    "--batch-size",
    "16",
    "--epochs",
    "2",
    "--checkpoint-every",
    "2",
    "--no-evaluate",
    "--deterministic",
    "--verbose",
    "0",
    "--method",
    "svre",
    "--warm-start-method",
    "none",
]
ITERATIONS_PER_EPOCH, TOTAL = 8, 16
TIMEOUT = 200


def _train(out, data_dir, *extra):
    argv = [sys.executable, "-m", "keras_svre", "train", *RUN, *extra]
    argv += ["--data-dir", data_dir, "--out", os.fspath(out)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _finish(process, timeout=TIMEOUT):
    try:
        output = process.communicate(timeout=timeout)[0]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output[-4000:]
    return output


def _iterations(model):
    return model.iterations


def _assert_all_keras_files_load(directory):
    files = sorted(directory.glob("*.keras"))
    assert files
    for path in files:
        keras.models.load_model(path)  # A half-written file would not load.
    return files


def _kill_after_a_checkpoint_in_training(process, checkpoint):
    """SIGKILLs `process` once it has written a checkpoint after iteration 0.

    A run's first checkpoint is its state before training; each later one
    replaces the file (a new inode and time, by the atomic rename). Killing right
    after the first replacement lands inside the first epoch, typically
    while the next iterations run or the next checkpoint is being written.
    """
    deadline = time.monotonic() + TIMEOUT
    first = None
    while time.monotonic() < deadline and process.poll() is None:
        try:
            stat = checkpoint.stat()
            version = (stat.st_ino, stat.st_mtime_ns)
        except FileNotFoundError:
            version = None
        if first is None:
            first = version
        elif version is not None and version != first:
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
            return
        time.sleep(0.01)
    process.kill()
    output = process.communicate()[0]
    pytest.fail(f"the run ended before it could be killed:\n{output[-4000:]}")


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, data_dir):
    straight_out, killed_out = tmp_path / "straight", tmp_path / "killed"
    straight = _train(straight_out, data_dir)
    victim = _train(killed_out, data_dir)
    try:
        _kill_after_a_checkpoint_in_training(victim, killed_out / "checkpoint.keras")
        assert victim.returncode == -signal.SIGKILL
        # What the kill left: complete files only, the last one mid-epoch.
        _assert_all_keras_files_load(killed_out)
        resumed_from = _iterations(
            keras.models.load_model(killed_out / "checkpoint.keras")
        )
        assert 0 < resumed_from < ITERATIONS_PER_EPOCH
        _finish(_train(killed_out, data_dir, "--resume"))
        _finish(straight)
    finally:
        for p in (straight, victim):
            if p.poll() is None:
                p.kill()
                p.communicate()

    assert not list(killed_out.glob(".partial-*"))
    assert {p.name for p in _assert_all_keras_files_load(killed_out)} == {
        "checkpoint.keras",
        "model.keras",
    }
    expected = keras.models.load_model(straight_out / "model.keras")
    resumed = keras.models.load_model(killed_out / "model.keras")
    assert _iterations(expected) == _iterations(resumed) == TOTAL
    assert len(expected.weights) == len(resumed.weights)
    for a, b in zip(expected.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for opt_a, opt_b in zip(expected.game_optimizers, resumed.game_optimizers):
        for a, b in zip(opt_a.variables, opt_b.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert int(resumed.restart_draws.numpy()) == int(expected.restart_draws.numpy())


# --------------------------------------------------------------------------- #
# The checkpoint callback and the atomic save, in-process.
# --------------------------------------------------------------------------- #
def _bilinear(lr=0.1):
    game = keras_svre.BilinearGame(dim=4, seed=0)
    game.compile(optimizer=keras_svre.SVRE(lr, restart_probability=0.5))
    return game


def test_a_save_killed_midway_leaves_the_previous_file(tmp_path, monkeypatch):
    game = _bilinear()
    path = tmp_path / "checkpoint.keras"
    callbacks.save_atomically(game, path)
    before = path.read_bytes()

    def dies_while_writing(filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # Stands in for the process dying here.

    monkeypatch.setattr(game, "save", dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        callbacks.save_atomically(game, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    removed = callbacks.remove_partial_saves(tmp_path)
    assert len(removed) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.keras"]
    keras.models.load_model(path)


def test_guarded_checkpoint_saves_every_n_iterations(tmp_path):
    game = _bilinear()
    path = tmp_path / "checkpoint.keras"
    saved = []

    class Spy(callbacks.GuardedCheckpoint):
        def _save(self):
            super()._save()
            saved.append(self.saved_step)

    data_ = game.component_dataset(batch_size=1, seed=0)  # 2 iterations/epoch
    game.fit(data_, epochs=3, callbacks=[Spy(path, every_steps=4)], verbose=0)
    # Before training, every 4 iterations, and at each epoch end (not twice).
    assert saved == [0, 2, 4, 6]
    assert _iterations(keras.models.load_model(path)) == 6


def test_guarded_checkpoint_stops_before_saving_non_finite_weights(tmp_path):
    game = _bilinear(lr=1e30)
    path = tmp_path / "checkpoint.keras"
    guard = callbacks.GuardedCheckpoint(path, every_steps=1)
    # `fit` itself stops with an error; the guard has recorded where first.
    with pytest.raises(callbacks.NonFiniteLossError, match="Training stopped at"):
        game.fit(
            game.component_dataset(batch_size=1, seed=0),
            epochs=50,
            callbacks=[guard],
            verbose=0,
        )
    assert guard.nonfinite_step is not None
    assert guard.saved_step < guard.nonfinite_step
    kept = keras.models.load_model(path)
    assert all(np.isfinite(v.numpy()).all() for v in kept.weights)
    with pytest.raises(ValueError, match="every_steps"):
        callbacks.GuardedCheckpoint(path, every_steps=-1)
