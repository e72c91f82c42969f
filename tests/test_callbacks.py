"""The training callbacks: kept and best checkpoints, TensorBoard logs."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_svre
from keras_svre import callbacks


def _bilinear(lr=0.1):
    game = keras_svre.BilinearGame(dim=4, seed=0)
    game.compile(optimizer=keras_svre.SVRE(lr, restart_probability=0.5))
    return game


def _data(game):
    return game.component_dataset(batch_size=1, seed=0)  # 2 iterations/epoch


def _iterations(path):
    return int(keras.models.load_model(path).optimizer.iterations.numpy())


def _dies_while_writing(filepath, *args, **kwargs):
    with open(filepath, "wb") as f:
        f.write(b"PK\x03\x04 half a zip")
    raise KeyboardInterrupt  # Stands in for the process dying here.


# --------------------------------------------------------------------------- #
# GuardedCheckpoint(keep=N): the last N checkpoints.
# --------------------------------------------------------------------------- #
def test_the_last_n_checkpoints_are_kept(tmp_path):
    game = _bilinear()
    path = tmp_path / "checkpoint.keras"
    guard = callbacks.GuardedCheckpoint(path, keep=2)
    game.fit(_data(game), epochs=2, callbacks=[guard], verbose=0)
    assert [p.name for p in guard.kept()] == [
        "checkpoint-00000002.keras",
        "checkpoint-00000004.keras",
    ]
    game.fit(_data(game), epochs=2, callbacks=[guard], verbose=0)
    kept = guard.kept()
    assert [_iterations(p) for p in kept] == [6, 8]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        p.name for p in kept
    ]
    # The latest is checkpoint.keras.
    assert kept[-1].read_bytes() == path.read_bytes()


def test_keep_zero_keeps_only_the_latest(tmp_path):
    game = _bilinear()
    guard = callbacks.GuardedCheckpoint(tmp_path / "checkpoint.keras")
    game.fit(_data(game), epochs=2, callbacks=[guard], verbose=0)
    assert not (tmp_path / "checkpoints").exists()
    with pytest.raises(ValueError, match="Argument `keep` must be >= 0"):
        callbacks.GuardedCheckpoint(tmp_path / "checkpoint.keras", keep=-1)


def test_a_kept_checkpoint_killed_midway_leaves_no_half_file(tmp_path, monkeypatch):
    game = _bilinear()
    path = tmp_path / "checkpoint.keras"
    guard = callbacks.GuardedCheckpoint(path, keep=3)
    game.fit(_data(game), epochs=1, callbacks=[guard], verbose=0)
    before = {p.name: p.read_bytes() for p in guard.kept()}
    latest = path.read_bytes()
    monkeypatch.setattr(game, "save", _dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        game.fit(_data(game), epochs=1, callbacks=[guard], verbose=0)
    assert {p.name: p.read_bytes() for p in guard.kept()} == before
    assert path.read_bytes() == latest
    callbacks.remove_partial_saves(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.keras",
        "checkpoints",
    ]


# --------------------------------------------------------------------------- #
# BestCheckpoint: the best by a measure, in its direction.
# --------------------------------------------------------------------------- #
def _best(tmp_path, game, monitor="fid", mode="min"):
    best = callbacks.BestCheckpoint(tmp_path / "best.keras", monitor, mode)
    best.set_model(game)
    return best


def _first_weight(path):
    return keras.models.load_model(path).game_variables[0].numpy().copy()


@pytest.mark.parametrize(
    "mode, scores, kept",
    [
        # FID: lower is better; the best of the generators counts.
        ("min", [(5.0, 9.0), (6.0, 7.0), (4.0, 8.0)], [0, 0, 2]),
        # Inception Score: higher is better.
        ("max", [(5.0, 1.0), (6.0, 2.0), (5.5, 3.0)], [0, 1, 1]),
    ],
)
def test_best_checkpoint_updates_only_on_improvement(tmp_path, mode, scores, kept):
    game = _bilinear()
    best = _best(tmp_path, game, "score", mode)
    weights = []
    for epoch, (ema, current) in enumerate(scores):
        game.game_variables[0].assign(np.full(game.game_variables[0].shape, epoch))
        weights.append(game.game_variables[0].numpy().copy())
        logs = {"score_ema": ema, "score_current": current, "iterations": 10 * epoch}
        best.on_epoch_end(epoch, logs)
        np.testing.assert_array_equal(
            _first_weight(tmp_path / "best.keras"), weights[kept[epoch]]
        )
    record = json.loads((tmp_path / "best.json").read_text())
    pick = min if mode == "min" else max
    value = pick(v for pair in scores for v in pair)
    assert record["value"] == value == best.best
    assert record["iteration"] == 10 * kept[-1]
    assert record["monitor"] == "score"
    assert record["generator"] == (
        "ema" if value in [s[0] for s in scores] else "current"
    )


def test_best_checkpoint_resumes_from_its_record(tmp_path):
    game = _bilinear()
    _best(tmp_path, game).on_epoch_end(0, {"fid_ema": 3.0})
    saved = (tmp_path / "best.keras").read_bytes()
    resumed = _best(tmp_path, game)
    assert resumed.best == 3.0
    game.game_variables[0].assign(np.ones(game.game_variables[0].shape))
    resumed.on_epoch_end(1, {"fid_ema": 4.0, "fid_average": float("nan")})
    assert (tmp_path / "best.keras").read_bytes() == saved
    resumed.on_epoch_end(2, {"fid": 2.0})  # A plain key counts as well.
    assert json.loads((tmp_path / "best.json").read_text())["value"] == 2.0
    assert "generator" not in json.loads((tmp_path / "best.json").read_text())
    with pytest.raises(ValueError, match="Argument `mode` must be 'min' or 'max'"):
        callbacks.BestCheckpoint(tmp_path / "b.keras", "fid", "auto")


def test_a_best_checkpoint_killed_midway_keeps_the_previous_best(tmp_path, monkeypatch):
    game = _bilinear()
    best = _best(tmp_path, game)
    best.on_epoch_end(0, {"fid_ema": 3.0})
    saved = (tmp_path / "best.keras").read_bytes()
    record = (tmp_path / "best.json").read_text()
    monkeypatch.setattr(game, "save", _dies_while_writing)
    with pytest.raises(KeyboardInterrupt):
        best.on_epoch_end(1, {"fid_ema": 1.0})
    assert (tmp_path / "best.keras").read_bytes() == saved
    assert (tmp_path / "best.json").read_text() == record
    assert best.best == 3.0
    keras.models.load_model(tmp_path / "best.keras")


# --------------------------------------------------------------------------- #
# TensorBoardLogger: losses as means over their windows.
# --------------------------------------------------------------------------- #
def _scalars(log_dir) -> dict:
    """`{tag: [(step, value), ...]}` of the scalar events in `log_dir`."""
    found = {}
    for path in sorted(log_dir.iterdir()):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor))
                found.setdefault(value.tag, []).append((event.step, number))
    return found


@pytest.mark.parametrize("update_freq", [1, 2])
def test_tensorboard_losses_are_window_means_of_the_epoch(tmp_path, update_freq):
    # 8 components in batches of 1: 4 extragradient iterations per epoch.
    game = keras_svre.BilinearGame(dim=8, seed=0)
    game.compile(optimizer=keras_svre.SVRE(0.1, restart_probability=0.5))
    logger = callbacks.TensorBoardLogger(
        tmp_path, update_freq=update_freq, generators=()
    )
    history = game.fit(_data(game), epochs=2, callbacks=[logger], verbose=0)
    scalars = _scalars(tmp_path)
    for name in [m.name for m in game.metrics]:
        written = scalars[name]
        windows = 4 // update_freq
        assert [step for step, _ in written] == [
            update_freq * (k + 1) for k in range(2 * windows)
        ]
        # Equal windows: their means average to the epoch's mean.
        for epoch in range(2):
            means = [v for _, v in written[epoch * windows : (epoch + 1) * windows]]
            assert np.mean(means) == pytest.approx(history.history[name][epoch])
    with pytest.raises(ValueError, match="`update_freq` must be a positive"):
        callbacks.TensorBoardLogger(tmp_path, update_freq=0)


def test_epoch_evaluation_adds_its_values_every_n_epochs():
    game = _bilinear()
    seen = []
    evaluation = callbacks.EpochEvaluation(lambda model: {"score": 1.0}, every=2)

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append("score" in logs)

    game.fit(_data(game), epochs=4, callbacks=[evaluation, Record()], verbose=0)
    assert seen == [False, True, False, True]
    with pytest.raises(ValueError, match="`every` must be a positive integer"):
        callbacks.EpochEvaluation(lambda model: {}, every=0)


def test_tensorboard_logger_steps_a_plain_model_by_its_optimizer(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((8, 2), "float32")
    logger = callbacks.TensorBoardLogger(tmp_path, update_freq=2, generators=())
    model.fit(x, x[:, :1], batch_size=2, epochs=2, callbacks=[logger], verbose=0)
    assert [step for step, _ in _scalars(tmp_path)["loss"]] == [2, 4, 6, 8]
