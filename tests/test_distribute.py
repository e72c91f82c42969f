"""Training under tf.distribute: MirroredStrategy, MultiWorkerMirroredStrategy, XLA.

The distributed runs happen in child processes (this file run as a script):
logical CPU devices must be configured before TensorFlow initialises, and
each worker of a multi-worker cluster is its own process.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

N, LATENT, PIXELS = 13, 3, 4
BATCH, SNAPSHOT_BATCH = 4, 6  # The snapshot pass ends with a batch of 1.
PASSES = 3
CHILD_TIMEOUT = 240


# --------------------------------------------------------------------------- #
# The run compared across strategies (also executed by the child processes).
# --------------------------------------------------------------------------- #
def _datasets():
    """The training stream (global batches, fixed order) and the snapshot data."""
    import tensorflow as tf

    x = np.random.default_rng(1).normal(size=(N, PIXELS)).astype("float32")
    rng = np.random.default_rng(2)
    order = np.concatenate([rng.permutation(N) for _ in range(PASSES)])
    order = order[: len(order) // BATCH * BATCH]
    train = tf.data.Dataset.from_tensor_slices((order, x[order])).batch(BATCH)
    snapshot = tf.data.Dataset.from_tensor_slices((np.arange(N), x)).batch(
        SNAPSHOT_BATCH
    )
    return train, snapshot


def _game_run(method, strategy=None):
    """Trains a tiny GAN; returns `(weights, optimizer variables, history)`."""
    gan, history = _train(method, strategy)
    weights = {v.path: v.numpy() for v in gan.weights}
    slots = {v.path: v.numpy() for v in gan.optimizer.variables}
    return weights, slots, history.history


def _train(method, strategy=None, jit_compile="auto"):
    """Trains a tiny GAN; returns it and the `History`.

    The same global batches (order, size) and noise bank whatever the
    strategy; the generator has a batch norm, synchronised across replicas.
    """
    import keras
    import tensorflow as tf

    import keras_svre
    from keras_svre import distribute

    strategy = strategy or tf.distribute.get_strategy()
    train, snapshot = _datasets()
    with strategy.scope():
        keras.utils.set_random_seed(0)
        generator = keras.Sequential(
            [
                keras.Input((LATENT,)),
                keras.layers.Dense(PIXELS, name="dense"),
                keras.layers.BatchNormalization(name="batch_norm"),
            ],
            name="g",
        )
        discriminator = keras.Sequential(
            [keras.Input((PIXELS,)), keras.layers.Dense(1, name="dense")], name="d"
        )
        assert distribute.synchronize_batch_norm(generator, discriminator) == 1
        gan = keras_svre.GAN(
            generator, discriminator, num_examples=N, seed=0, name="gan"
        )
        if method == "svre":
            optimizer = keras_svre.SVRE(0.1, restart_probability=0.3)
        else:
            # Clipping active: Keras clips per replica, the Game globally.
            optimizer = keras.optimizers.SGD(0.1, clipnorm=0.01)
        if method == "alternating":
            # Two discriminator steps per generator step, one optimizer each.
            discriminator_optimizer = keras.optimizers.SGD(0.2, clipnorm=0.01)
            gan.compile(
                generator_optimizer=optimizer,
                discriminator_optimizer=discriminator_optimizer,
                n_dis=2,
                jit_compile=jit_compile,
            )
        else:
            gan.compile(optimizer=optimizer, jit_compile=jit_compile)
    if strategy.num_replicas_in_sync > 1:
        # The optimizer's slots are distributed variables.
        assert all(
            isinstance(v.value, tf.distribute.DistributedValues)
            for v in optimizer.variables
        )
    kwargs = {"snapshot_data": snapshot} if method == "svre" else {}
    return gan, gan.fit(train, verbose=0, **kwargs)


def _save_run(path, run):
    weights, slots, history = run
    arrays = {f"w:{k}": v for k, v in weights.items()}
    arrays.update({f"o:{k}": v for k, v in slots.items()})
    np.savez(path, **arrays)
    with open(f"{path}.json", "w") as f:
        json.dump(history, f)


def _load_run(path):
    arrays = np.load(path)
    weights = {k[2:]: arrays[k] for k in arrays.files if k.startswith("w:")}
    slots = {k[2:]: arrays[k] for k in arrays.files if k.startswith("o:")}
    with open(f"{path}.json") as f:
        history = json.load(f)
    return weights, slots, history


def _slot_name(path):
    # Optimizer variable paths start with the optimizer's (unique) name.
    return path.split("/", 1)[-1]


def _assert_runs_close(a, b, rtol=1e-5, atol=1e-6):
    wa, sa, ha = a
    wb, sb, hb = b
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_allclose(wa[key], wb[key], rtol=rtol, atol=atol, err_msg=key)
    sa = {_slot_name(k): v for k, v in sa.items()}
    sb = {_slot_name(k): v for k, v in sb.items()}
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_allclose(sa[key], sb[key], rtol=rtol, atol=atol, err_msg=key)
    assert ha.keys() == hb.keys()
    for key in ha:
        np.testing.assert_allclose(ha[key], hb[key], rtol=rtol, err_msg=key)


# --------------------------------------------------------------------------- #
# Child processes.
# --------------------------------------------------------------------------- #
def _child_mirrored(out_dir):
    """Single device, then MirroredStrategy on 2 logical CPUs, per method."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    # One strategy for both runs: collective keys of a second MirroredStrategy
    # in the same process clash with the first's.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    for method in ("svre", "sgda", "alternating"):
        _save_run(os.path.join(out_dir, f"{method}-single.npz"), _game_run(method))
        run = _game_run(method, strategy)
        _save_run(os.path.join(out_dir, f"{method}-mirrored.npz"), run)


def _child_mirrored_mixed(out_path):
    """mixed_float16 under MirroredStrategy: an overflow skips, then training goes on."""
    import keras
    import tensorflow as tf

    import keras_svre

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    keras.mixed_precision.set_global_policy("mixed_float16")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    train, snapshot = _datasets()
    results = {}
    for method in ("sgda", "svre"):
        with strategy.scope():
            keras.utils.set_random_seed(0)
            generator = keras.Sequential(
                [keras.Input((LATENT,)), keras.layers.Dense(PIXELS, activation="tanh")]
            )
            discriminator = keras.Sequential(
                [keras.Input((PIXELS,)), keras.layers.Dense(1)]
            )
            gan = keras_svre.GAN(generator, discriminator, num_examples=N, seed=0)
            inner = (
                keras_svre.SVRE(0.05, restart_probability=0.3)
                if method == "svre"
                else keras.optimizers.SGD(0.05)
            )
            # 2**40 overflows float16: the first iteration must be skipped.
            gan.compile(
                optimizer=keras.optimizers.LossScaleOptimizer(
                    inner, initial_scale=2.0**40, dynamic_growth_steps=1000
                )
            )
        kwargs = {"snapshot_data": snapshot} if method == "svre" else {}
        if method == "svre":
            gan.take_snapshot(snapshot)
            gan.loss_scale.assign(2.0**40)
        before = [v.numpy() for v in gan.trainable_variables]
        gan.fit(train, steps_per_epoch=1, verbose=0, **kwargs)
        first = {
            "iterations": int(gan.optimizer.iterations.numpy()),
            "scale": float(gan.loss_scale.numpy()),
            "unchanged": all(
                np.array_equal(a, v.numpy())
                for a, v in zip(before, gan.trainable_variables)
            ),
        }
        gan.fit(train, epochs=12, verbose=0, **kwargs)
        results[method] = {
            "first": first,
            "iterations": int(gan.optimizer.iterations.numpy()),
            "finite": all(np.isfinite(v.numpy()).all() for v in gan.weights),
        }
    with open(out_path, "w") as f:
        json.dump(results, f)


def _child_worker(out_path):
    """One worker of a MultiWorkerMirroredStrategy cluster (TF_CONFIG)."""
    import tensorflow as tf

    from keras_svre import distribute

    strategy = distribute.make_strategy("multiworker")
    assert distribute.is_multi_worker(strategy)
    assert strategy.num_replicas_in_sync == 2
    _save_run(out_path, _game_run("svre", strategy))
    tf.print("worker", distribute.worker_index(strategy), "done")


def _child_plain_keras_worker(out_path):
    """A plain Keras model's `fit` on a worker: records whether it raised."""
    import keras
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    x = np.ones((8, 2), "float32")
    with strategy.scope():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
    try:
        model.fit(tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(4))
        outcome = "trained"
    except Exception as e:  # noqa: BLE001 - the outcome is what is recorded
        outcome = f"raised {type(e).__name__}: {e}"
    with open(out_path, "w") as f:
        f.write(outcome)


# --------------------------------------------------------------------------- #
# Helpers of the tests.
# --------------------------------------------------------------------------- #
def _child_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_children(commands, timeout=CHILD_TIMEOUT):
    """Starts `(argv, env)` children together; waits (bounded); always cleans up."""
    procs = []
    try:
        for argv, env in commands:
            procs.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    start_new_session=True,
                )
            )
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for p, output in zip(procs, outputs):
        assert p.returncode == 0, output[-4000:]
    return outputs


# --------------------------------------------------------------------------- #
# Tests.
# --------------------------------------------------------------------------- #
def test_mirrored_two_replicas_equal_one_device(tmp_path):
    """2 logical CPUs give the single-device weights, slots and losses."""
    _run_children(
        [([sys.executable, __file__, "mirrored", str(tmp_path)], _child_env())]
    )
    for method in ("svre", "sgda", "alternating"):
        single = _load_run(tmp_path / f"{method}-single.npz")
        mirrored = _load_run(tmp_path / f"{method}-mirrored.npz")
        _assert_runs_close(single, mirrored)
        # The run really trained (and SVRE took snapshots on the way).
        assert not np.allclose(single[0]["g/dense/kernel"], 0)
        if method == "svre":
            snapshots = [v for k, v in single[1].items() if "snapshots_taken" in k]
            assert int(snapshots[0]) >= 2


def test_mirrored_mixed_float16_skips_overflows_and_recovers(tmp_path):
    out = tmp_path / "mixed.json"
    _run_children(
        [([sys.executable, __file__, "mirrored-mixed", str(out)], _child_env())]
    )
    results = json.loads(out.read_text())
    for method, result in results.items():
        assert result["first"] == {
            "iterations": 0,
            "scale": 2.0**39,
            "unchanged": True,
        }, method
        assert result["iterations"] > 0 and result["finite"], method


def test_multi_worker_fit_gives_identical_weights(tmp_path):
    """Two worker processes on 127.0.0.1: SVRE `fit` completes, in lockstep.

    Plain Keras `fit` fails under MultiWorkerMirroredStrategy
    (keras-team/keras#20585); this pins the Game's work-around.
    """
    _run_children(_cluster_commands(tmp_path, "worker"))
    first = _load_run(tmp_path / "worker0.npz")
    second = _load_run(tmp_path / "worker1.npz")
    _assert_runs_close(first, second, rtol=0, atol=0)
    # The same run as on one device with the same global batches.
    _assert_runs_close(first, _game_run("svre"))
    assert all(np.isfinite(v).all() for v in first[2]["generator_loss"])


def _cluster_commands(tmp_path, role):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    commands = []
    for index in range(2):
        env = _child_env()
        env["TF_CONFIG"] = json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}
        )
        out = str(tmp_path / f"worker{index}.npz")
        commands.append(([sys.executable, __file__, role, out], env))
    return commands


@pytest.mark.slow
def test_keras_multi_worker_fit_is_still_broken_upstream(tmp_path):
    """keras-team/keras#20585: when this fails, the Game's work-around can go."""
    _run_children(_cluster_commands(tmp_path, "plain-worker"))
    outcome = (tmp_path / "worker0.npz").read_text()
    assert outcome.startswith("raised"), outcome


def test_the_private_keras_hook_overridden_still_exists():
    """`Game` overrides Keras' `_maybe_symbolic_build` (keras-team/keras#20585).

    If Keras renames it, the override no longer runs: this fails first.
    """
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    from keras_svre.game.backend.tensorflow import TensorFlowGameTrainer

    assert hasattr(TensorFlowTrainer, "_maybe_symbolic_build")
    assert "_maybe_symbolic_build" in vars(TensorFlowGameTrainer)


def test_strategies_by_name(monkeypatch):
    import tensorflow as tf

    from keras_svre import distribute

    assert distribute.make_strategy("default") is tf.distribute.get_strategy()
    with pytest.raises(ValueError, match="Unknown strategy 'nccl'"):
        distribute.make_strategy("nccl")
    with pytest.raises(ValueError, match="use the 'tpu' strategy"):
        distribute.make_strategy("mirrored", tpu="grpc://10.0.0.2:8470")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):
        distribute.make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        distribute.make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {}}')
    with pytest.raises(ValueError, match="'cluster' and 'task'"):
        distribute.make_strategy("multiworker")
    assert not distribute.is_multi_worker()
    assert distribute.is_chief() and distribute.worker_index() == 0
    logs = {"loss": tf.constant(1.0)}
    assert distribute.logs_for_reduction(logs) is logs


def test_static_batches_are_checked_for_tpu():
    from keras_svre import distribute

    distribute.check_static_batches(1000, 64, 200, 8)
    with pytest.raises(ValueError, match="multiple of the number of replicas"):
        distribute.check_static_batches(1000, 60, 200, 8)
    with pytest.raises(ValueError, match="must divide the number of examples"):
        distribute.check_static_batches(1000, 64, 400, 8)
    with pytest.raises(ValueError, match="must divide the number of examples"):
        distribute.check_static_batches(1000, 64, 200, 16)


def test_train_step_compiles_with_xla_and_has_no_host_ops():
    """The TPU path, checked on CPU: static shapes, no Python in the graphs.

    XLA refuses dynamic shapes and host callbacks, as a TPU does: the whole
    SVRE train step (four evaluations, extrapolation, update, averaging)
    compiles with `jit_compile=True`. The snapshot pass (a `tf.function`
    over the dataset) contains no op that calls back into Python.
    """
    gan, history = _train("svre", jit_compile=True)
    assert gan.jit_compile is True
    assert np.isfinite(history.history["generator_loss"][0])
    assert all(np.isfinite(v.numpy()).all() for v in gan.weights)
    snapshot_pass = gan._make_snapshot_pass(_datasets()[1])
    graph = snapshot_pass.get_concrete_function().graph
    op_types = {op.type for op in graph.get_operations()}
    for function in graph._functions.values():
        op_types |= {node.op for node in function.definition.node_def}
    assert not op_types & {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    role, target = sys.argv[1], sys.argv[2]
    children = {
        "mirrored": _child_mirrored,
        "mirrored-mixed": _child_mirrored_mixed,
        "worker": _child_worker,
        "plain-worker": _child_plain_keras_worker,
    }
    children[role](target)
