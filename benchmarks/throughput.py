"""Training throughput of SVRE and SGDA on 1 and 2 replicas (images per second).

Each configuration runs in its own process: logical devices must be set up
before TensorFlow initialises. Configurations:

- `1`: one device, no strategy (what a single-device user runs);
- `1-mirrored`: a `MirroredStrategy` over that one device, which separates
  the strategy's own cost from the cost of splitting the batch;
- `2`: a `MirroredStrategy` over two logical devices (CPU by default;
  `--device gpu` splits GPU 0 in two).

Under a strategy batch norm is synchronised across replicas, as
`keras-svre train` does. The GAN is the MNIST DCGAN of the paper at
`--width`, the batch is global, and a step is one iteration of the method:
SGDA consumes one minibatch per step, SVRE two (with four evaluations of the
game's field). Snapshot passes are switched off while timing (restart
probability ~0), so the numbers are those of the train step itself. Each
step is timed alone (the loop waits for it to finish); the median over
`--steps` steps, after `--warmup` steps (tracing), is reported.

    python benchmarks/throughput.py            # writes results/throughput_cpu.json

Logical CPU devices share the machine's cores: two replicas on CPU do not
add compute, so the ratio 2/1 measures the overhead of the strategy
(replicated functions, all-reduces, synchronised batch norm), not a speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

# Importing TensorFlow does not initialise its devices: a child process can
# still configure logical devices after these imports.
import keras
import tensorflow as tf

HERE = pathlib.Path(__file__).resolve().parent
METHODS = ("svre", "sgda")
#: Configuration -> (strategy, number of devices).
CONFIGS = {"1": ("default", 1), "1-mirrored": ("mirrored", 1), "2": ("mirrored", 2)}


def _parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument(
        "--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS)
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--batch-size", type=int, default=64, help="global batch")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--steps", type=int, default=15, help="timed steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--sync-batch-norm",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="synchronise batch norm across replicas (as keras-svre train does)",
    )
    parser.add_argument("--out", default=None, help="JSON file (default: results/)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    return parser


# --------------------------------------------------------------------------- #
# One replica count, in a child process.
# --------------------------------------------------------------------------- #
def _configure_devices(device, config):
    strategy, replicas = CONFIGS[config]
    if device == "cpu":
        tf.config.set_visible_devices([], "GPU")
        physical = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * replicas
    else:
        physical = tf.config.list_physical_devices("GPU")[0]
        tf.config.set_visible_devices([physical], "GPU")
        # Split GPU 0 into `replicas` logical GPUs (a memory limit each).
        logical = [tf.config.LogicalDeviceConfiguration(memory_limit=8192)] * replicas
    if replicas > 1 or device == "gpu":
        tf.config.set_logical_device_configuration(physical, logical)
    if strategy == "default":
        return tf.distribute.get_strategy()
    kind = device.upper()
    return tf.distribute.MirroredStrategy([f"/{kind}:{i}" for i in range(replicas)])


class StepTimer(keras.callbacks.Callback):
    """Wall time of every training step."""

    def on_train_begin(self, logs=None):
        self.times = []
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        # Reading a value waits for the step to finish.
        float(logs[next(iter(logs))])
        self.times.append(time.perf_counter() - self._start)


def _measure(method, strategy, args):
    import numpy as np

    import keras_svre
    from keras_svre import distribute

    batch = args.batch_size
    steps = args.warmup + args.steps
    k = 2 if method == "svre" else 1
    n = batch * k * 4
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (n, 28, 28, 1)).astype("float32")
    finite = tf.data.Dataset.from_tensor_slices((np.arange(n), images))
    train = finite.repeat().batch(batch, drop_remainder=True).prefetch(4)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        generator, discriminator = keras_svre.models.get_networks(
            "mnist_dcgan", width=args.width
        )
        if args.child != "1" and args.sync_batch_norm:
            distribute.synchronize_batch_norm(generator, discriminator)
        gan = keras_svre.GAN(generator, discriminator, num_examples=n, seed=0)
        if method == "svre":
            optimizer = keras_svre.SVRE(0.01, restart_probability=1e-12)
        else:
            optimizer = keras.optimizers.SGD(0.01)
        gan.compile(optimizer=optimizer)
    timer = StepTimer()
    kwargs = {"snapshot_data": finite.batch(256)} if method == "svre" else {}
    gan.fit(train, steps_per_epoch=steps, callbacks=[timer], verbose=0, **kwargs)
    timed = timer.times[args.warmup :]
    median = statistics.median(timed)
    return {
        "images_per_step": batch * k,
        "step_seconds_median": median,
        "step_seconds_all": [round(t, 5) for t in timed],
        "steps_per_second": 1.0 / median,
        "images_per_second": batch * k / median,
    }


def _child(args):
    strategy = _configure_devices(args.device, args.child)
    assert strategy.num_replicas_in_sync == CONFIGS[args.child][1]
    results = {method: _measure(method, strategy, args) for method in args.methods}
    pathlib.Path(args.child_out).write_text(json.dumps(results))


# --------------------------------------------------------------------------- #
# The benchmark.
# --------------------------------------------------------------------------- #
def _run_child(args, config, out):
    argv = [sys.executable, os.fspath(pathlib.Path(__file__).resolve())]
    argv += ["--child", config, "--child-out", out, "--device", args.device]
    argv += ["--methods", *args.methods, "--batch-size", str(args.batch_size)]
    argv += ["--width", str(args.width), "--steps", str(args.steps)]
    argv += ["--warmup", str(args.warmup)]
    argv += ["--sync-batch-norm" if args.sync_batch_norm else "--no-sync-batch-norm"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"configuration {config} failed:\n{done.stderr[-4000:]}")
    return json.loads(pathlib.Path(out).read_text())


def main(argv=None):
    args = _parser().parse_args(argv)
    if args.child is not None:
        _child(args)
        return
    load_before = os.getloadavg()
    by_config = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs:
            out = os.path.join(tmp, f"{config}.json")
            by_config[config] = _run_child(args, config, out)
    results = {}
    for method in args.methods:
        entry = {config: by_config[config][method] for config in args.configs}
        for base in ("1", "1-mirrored"):
            if base in by_config and "2" in by_config:
                entry[f"ratio_2_over_{base}"] = (
                    by_config["2"][method]["images_per_second"]
                    / by_config[base][method]["images_per_second"]
                )
        results[method] = entry
    report = {
        "device": args.device,
        "cpu_count": os.cpu_count(),
        # Other work on the machine slows the runs: the 1-minute load average.
        "load_average_before_after": [
            round(load_before[0], 2),
            round(os.getloadavg()[0], 2),
        ],
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "network": f"mnist_dcgan width {args.width}",
        "global_batch_size": args.batch_size,
        "synchronized_batch_norm": args.sync_batch_norm,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "statistic": "median step time; images/s = images per step / median",
        "configs": {
            c: f"{CONFIGS[c][0]} strategy, {CONFIGS[c][1]} device(s)"
            for c in args.configs
        },
        "results": results,
    }
    out = pathlib.Path(args.out or HERE / "results" / f"throughput_{args.device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    _print_table(report, args.configs)
    print(f"wrote {out}")


def _print_table(report, configs):
    sync = "synchronised" if report["synchronized_batch_norm"] else "per-replica"
    print(
        f"{report['device']}: {report['network']}, global batch "
        f"{report['global_batch_size']}, {sync} batch norm under a strategy, "
        f"median of {report['timed_steps']} steps; images/s"
    )
    ratios = [
        k for k in next(iter(report["results"].values())) if k.startswith("ratio")
    ]
    print(
        f"{'method':<8}"
        + "".join(f"{c:>12}" for c in configs)
        + "".join(f"{r.replace('ratio_2_over_', '2/'):>16}" for r in ratios)
    )
    for method, entry in report["results"].items():
        cells = "".join(f"{entry[c]['images_per_second']:>12.1f}" for c in configs)
        cells += "".join(f"{entry[r]:>16.2f}" for r in ratios)
        print(f"{method:<8}{cells}")


if __name__ == "__main__":
    main()
