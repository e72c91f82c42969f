"""Cost of one iteration of each method, against SGDA with Adam, in one run.

    python benchmarks/step_cost.py                       # CPU, MNIST DCGAN
    python benchmarks/step_cost.py --networks mnist_dcgan:64 dcgan32:64 --steps 30
    python benchmarks/step_cost.py --backends jax        # JAX only (no TensorFlow)

For each Keras backend (TensorFlow and JAX, those installed), network and
method (SGDA-Adam, SE, SE-A, SVRE, SVRE-VRAd, and SVRE with one minibatch
per iteration), with and without XLA (`jit_compile=True`; on JAX always
with: its steps are always compiled), each in a fresh subprocess (so peak
memory is its own), it measures:

- the median time of a training iteration (iterations with a snapshot pass
  excluded), and its ratio to SGDA-Adam's (the cost model says 1, 2, 2, 4, 4
  and 3 minibatch evaluations);
- the snapshot pass: seconds per pass and examples/s, against a plain
  gradient pass over the same data at the same batch size;
- the amortised cost per epoch (iterations + the expected snapshot passes
  at p = 1/n);
- peak memory (host RSS on CPU; device peak on GPU);
- the first iteration's time (tracing and compiling included).

The ratios are within a backend; `backend_speed` compares the backends'
median iterations per network and method (XLA on). TensorFlow trains on a
cached `tf.data` pipeline, JAX on NumPy minibatches (each backend's own
path). Prints a table and writes `benchmarks/results/step_cost_<device>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

METHODS = ["adam", "se", "se-a", "svre", "svre-vrad", "svre-1mb"]
BACKENDS = ("tensorflow", "jax")


def measure(
    network: str,
    width: int,
    method: str,
    jit: bool,
    steps: int,
    batch_size: int,
    snapshot_batch_size: int,
) -> dict:
    """One configuration, in this process."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    import keras_svre

    backend = keras.backend.backend()

    keras.utils.set_random_seed(0)
    generator, discriminator = keras_svre.models.get_networks(network, width=width)
    shape = tuple(discriminator.input_shape[1:])
    n = 64 * batch_size  # a synthetic finite sum: 64 minibatches
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (n,) + shape).astype("float32")
    index = np.arange(n, dtype=np.int32)
    if backend == "tensorflow":
        import tensorflow as tf

        train = (
            tf.data.Dataset.from_tensor_slices((index, images))
            .batch(batch_size, drop_remainder=True)
            .cache()
            .repeat()
            .prefetch(8)
        )
        snapshot = (
            tf.data.Dataset.from_tensor_slices((index, images))
            .batch(snapshot_batch_size)
            .cache()
        )
    else:
        minibatches = keras_svre.data.ArrayMinibatches(
            (index, images), batch_size, drop_remainder=True
        )
        # As `.repeat()`: as many minibatches as the timed iterations use.
        train = _cycle(minibatches, 2 * (steps + 3))
        snapshot = keras_svre.data.ArrayMinibatches(
            (index, images), snapshot_batch_size
        )
    gan = keras_svre.GAN(generator, discriminator, num_examples=n, seed=0)
    one_minibatch = method == "svre-1mb"
    table = keras_svre.optimizers.method("svre" if one_minibatch else method)
    kwargs = table.applicable(beta_1=0.5, restart_probability=1.0 / 64)
    optimizer = table.build(table.learning_rate, **kwargs)
    gan.compile(
        optimizer=optimizer,
        jit_compile=jit,
        **({"one_minibatch": True} if one_minibatch else {}),
    )

    times, snapshots_seen = [], []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.t = time.perf_counter()
            self.s = gan.snapshots_taken

        def on_train_batch_end(self, batch, logs=None):
            float(logs[next(iter(logs))])  # wait for the step's results
            times.append(time.perf_counter() - self.t)
            snapshots_seen.append(gan.snapshots_taken != self.s)

    fit_kwargs = {"snapshot_data": snapshot} if gan.variance_reduced else {}
    warmup = 3
    gan.fit(
        train,
        epochs=1,
        steps_per_epoch=steps + warmup,
        verbose=0,
        callbacks=[Timer()],
        **fit_kwargs,
    )
    # The timer callback runs after the snapshot callback, so an iteration that
    # drew a snapshot includes the pass: leave those out of the median.
    clean = [t for t, s in zip(times[warmup:], snapshots_seen[warmup:]) if not s]
    result = {
        "backend": backend,
        "device": _device(),
        "network": network,
        "width": width,
        "method": method,
        "jit_compile": jit,
        "batch_size": batch_size,
        "iterations_timed": len(clean),
        "median_iteration_s": statistics.median(clean),
        # Tracing and compiling included (and a snapshot pass for SVRE).
        "first_iteration_s": times[0],
        "evaluations_per_iteration": gan.evaluations_per_iteration,
        "parameters": int(generator.count_params() + discriminator.count_params()),
    }
    if gan.variance_reduced:
        gan.take_snapshot(snapshot)  # traced already; time the next ones
        passes = []
        for _ in range(3):
            t = time.perf_counter()
            gan.take_snapshot(snapshot)
            _wait_for(gan.optimizer.variables)
            passes.append(time.perf_counter() - t)
        result["snapshot_pass_s"] = statistics.median(passes)
        result["snapshot_examples_per_s"] = n / result["snapshot_pass_s"]
        plain = (
            _plain_gradient_pass(gan, snapshot)
            if backend == "tensorflow"
            else _plain_gradient_pass_jax(gan, snapshot)
        )
        result["plain_pass_s"] = plain
        result["plain_examples_per_s"] = n / plain
        result["snapshot_vs_plain_speed"] = plain / result["snapshot_pass_s"]
        per_epoch = 64 // gan.minibatches_per_iteration
        result["amortised_epoch_s"] = (
            per_epoch * result["median_iteration_s"]
            + per_epoch / 64 * result["snapshot_pass_s"]
        )
    else:
        per_epoch = 64 // gan.minibatches_per_iteration
        result["amortised_epoch_s"] = per_epoch * result["median_iteration_s"]
    result["peak_memory_mb"] = _peak_memory_mb()
    return result


def _plain_gradient_pass(gan, dataset):
    """A plain pass: both players' gradients on every batch, summed, in one tf.function."""
    import tensorflow as tf

    variables = gan.game_variables

    @tf.function
    def run():
        sums = tuple(tf.zeros(v.shape, v.dtype) for v in variables)
        for batch in dataset:
            with tf.GradientTape(persistent=True) as tape:
                losses = gan.compute_player_losses(batch, training=True)
            grads = tape.gradient(
                losses["generator"], gan.generator.trainable_variables
            )
            grads += tape.gradient(
                losses["discriminator"], gan.discriminator.trainable_variables
            )
            sums = tuple(s + g for s, g in zip(sums, grads))
        return sums

    run()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        [s.numpy() for s in run()]
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _plain_gradient_pass_jax(gan, minibatches):
    """A plain pass on JAX: both players' gradients on every minibatch (one
    forward pass, one backward pass per player), summed by a jitted function
    looped on the host, as the snapshot pass is."""
    import jax
    import keras

    variables = gan.trainable_variables + gan.non_trainable_variables
    players = [gan.generator.trainable_variables, gan.discriminator.trainable_variables]
    # By identity: a Keras variable's `==` compares values.
    position = {id(v): i for i, v in enumerate(variables)}
    where = [[position[id(v)] for v in vs] for vs in players]

    @jax.jit
    def accumulate(values, sums, batch):
        def losses(trainable):
            mapping = list(zip(variables, trainable + values[len(trainable) :]))
            with keras.StatelessScope(state_mapping=mapping):
                out = gan.compute_player_losses(batch, training=True)
            return out["generator"], out["discriminator"]

        n = len(gan.trainable_variables)
        (g, d), pullback = jax.vjp(losses, values[:n])
        (grads_g,) = pullback((jax.numpy.ones_like(g), jax.numpy.zeros_like(d)))
        (grads_d,) = pullback((jax.numpy.zeros_like(g), jax.numpy.ones_like(d)))
        grads = [grads_g[i] for i in where[0]] + [grads_d[i] for i in where[1]]
        return [s + x for s, x in zip(sums, grads)]

    def run():
        values = [v.value for v in variables]
        sums = [jax.numpy.zeros(v.shape, v.dtype) for vs in players for v in vs]
        for i in range(len(minibatches)):
            sums = accumulate(values, sums, minibatches[i])
        return jax.block_until_ready(sums)

    run()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _cycle(minibatches, length):
    """`length` minibatches of a sequence, from its start again when it ends."""
    import keras

    class Cycle(keras.utils.PyDataset):
        def __len__(self):
            return length

        def __getitem__(self, i):
            return minibatches[i % len(minibatches)]

    return Cycle()


def _wait_for(variables):
    """Blocks until the variables' values are computed (JAX dispatches ahead)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        jax.block_until_ready([v.value for v in variables])


def _device() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.default_backend()
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def _peak_memory_mb():
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform != "cpu":
            stats = device.memory_stats() or {}
            return stats.get("peak_bytes_in_use", float("nan")) / 2**20
    else:
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _installed_backends():
    import importlib.util

    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


def _child(backend, network, width, method, jit, args):
    """One configuration in a fresh process on `backend`: its row."""
    cmd = [sys.executable, __file__, "--one", f"{network},{width},{method},{int(jit)}"]
    cmd += ["--steps", str(args.steps), "--batch-size", str(args.batch_size)]
    cmd += ["--snapshot-batch-size", str(args.snapshot_batch_size)]
    env = {**os.environ, "KERAS_BACKEND": backend}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"{backend} {network}:{width} {method} jit={jit} FAILED:")
        print(proc.stderr[-2000:])
        return {
            "backend": backend,
            "network": network,
            "width": int(width),
            "method": method,
            "jit_compile": jit,
            "returncode": proc.returncode,
            "error": proc.stderr[-2000:],
        }
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"  {backend:10s} {network}:{width} jit={int(jit)} {method:10s} "
        f"{row['median_iteration_s'] * 1e3:8.1f} ms",
        flush=True,
    )
    return row


def _add_ratios(rows):
    """Each row's ratio to SGDA-Adam's (same backend, network, XLA setting)."""
    ok = [r for r in rows if "error" not in r]
    for row in ok:
        key = (row["backend"], row["network"], row["jit_compile"])
        base = [
            r
            for r in ok
            if (r["backend"], r["network"], r["jit_compile"]) == key
            and r["method"] == "adam"
        ]
        if base:
            row["ratio_to_sgda_adam"] = (
                row["median_iteration_s"] / base[0]["median_iteration_s"]
            )


def _backend_speed(rows):
    """TensorFlow's median iteration over JAX's, per network and method (XLA on)."""
    ok = {
        (r["backend"], r["network"], r["method"]): r
        for r in rows
        if "error" not in r and r["jit_compile"]
    }
    speed = []
    for (backend, network, method), row in ok.items():
        other = ok.get(("tensorflow", network, method))
        if backend != "jax" or other is None:
            continue
        speed.append(
            {
                "network": network,
                "method": method,
                "tensorflow_over_jax_iteration": other["median_iteration_s"]
                / row["median_iteration_s"],
                "tensorflow_over_jax_first_iteration": other["first_iteration_s"]
                / row["first_iteration_s"],
            }
        )
    return speed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--networks",
        nargs="+",
        default=["mnist_dcgan:16"],
        help="name:width pairs (keras_svre.models names)",
    )
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=None,
        help="Keras backends to measure (default: those installed)",
    )
    parser.add_argument(
        "--jit",
        choices=["off", "on", "both"],
        default="both",
        help="XLA on TensorFlow (JAX always compiles)",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--snapshot-batch-size", type=int, default=512)
    parser.add_argument("--out", default=None)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one:  # child process: one configuration, JSON on the last line
        network, width, method, jit = args.one.split(",")
        print(
            json.dumps(
                measure(
                    network,
                    int(width),
                    method,
                    jit == "1",
                    args.steps,
                    args.batch_size,
                    args.snapshot_batch_size,
                )
            )
        )
        return

    backends = args.backends or _installed_backends()
    jits = {"off": [False], "on": [True], "both": [False, True]}[args.jit]
    rows = []
    for backend in backends:
        for spec in args.networks:
            network, width = spec.split(":")
            for jit in [True] if backend == "jax" else jits:
                for method in args.methods:
                    rows.append(_child(backend, network, width, method, jit, args))
                    # After every row: a run stopped early keeps what it measured.
                    out = _write(rows, args)

    print(
        f"\n{'backend':10s} {'network':16s} {'jit':3s} {'method':10s} "
        f"{'ms/iter':>8s} {'ratio':>6s} {'limit':>5s} {'first s':>7s} "
        f"{'snap/plain':>10s} {'epoch s':>8s} {'peak MB':>8s}"
    )
    for r in rows:
        if "error" in r:
            continue
        print(
            f"{r['backend']:10s} {r['network'] + ':' + str(r['width']):16s} "
            f"{int(r['jit_compile']):3d} {r['method']:10s} "
            f"{r['median_iteration_s'] * 1e3:8.1f} "
            f"{r.get('ratio_to_sgda_adam', float('nan')):6.2f} "
            f"{r['evaluations_per_iteration']:5d} "
            f"{r['first_iteration_s']:7.1f} "
            f"{r.get('snapshot_vs_plain_speed', float('nan')):10.2f} "
            f"{r['amortised_epoch_s']:8.2f} {r['peak_memory_mb']:8.0f}"
        )
    speed = _backend_speed(rows)
    for s in speed:
        print(
            f"{s['network']:16s} {s['method']:10s} TensorFlow/JAX time per "
            f"iteration {s['tensorflow_over_jax_iteration']:.2f}, first iteration "
            f"{s['tensorflow_over_jax_first_iteration']:.2f}"
        )
    print(f"wrote {out}")


def _write(rows, args) -> pathlib.Path:
    """The rows so far, their ratios and the backends' speeds, as JSON."""
    _add_ratios(rows)
    devices = sorted({r["device"] for r in rows if "device" in r}) or ["unknown"]
    device = "+".join(devices)
    out = pathlib.Path(args.out or f"benchmarks/results/step_cost_{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"device": device, "argv": sys.argv[1:], "results": rows}
    speed = _backend_speed(rows)
    if speed:
        result["backend_speed"] = speed
    out.write_text(json.dumps(result, indent=1))
    return out


if __name__ == "__main__":
    main()
