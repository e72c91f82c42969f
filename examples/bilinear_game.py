"""The SVRE paper's stochastic bilinear game (Fig. 4), trained with `fit`.

    python examples/bilinear_game.py --passes 600 --out runs/bilinear

d = n = 100, step size 0.3, minibatches of one component, restart
probability p = 1/n. One pass is n stochastic gradient evaluations; as in
the paper's figure an extragradient iteration counts as 2 evaluations (the
snapshot's exact mean is not counted). Prints the distance to the known
solution as training goes, writes `bilinear_distance.png` (log scale, the
paper's Fig. 4) and `bilinear_results.json`, and prints one JSON object on its
last line: `{"<method>": {"final_distance": ..., "passes": ...}, ...}`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

if keras.backend.backend() == "jax":
    import jax

    # The game is float64 (the distances go down to ~1e-7); JAX computes in
    # float32 unless x64 is on.
    jax.config.update("jax_enable_x64", True)

import keras_svre  # noqa: E402

METHODS = {
    # name: (optimizer factory, label in the plot)
    "svre_restart_avg": (
        lambda lr: keras_svre.SVRE(lr, average_restart_probability=0.1),
        "SVRE, restart from average (p=1/10)",
    ),
    "svre_vrad": (
        lambda lr: keras_svre.SVRE(
            lr, average_restart_probability=0.1, adaptive="vrad", beta_1=0.0, beta_2=0.9
        ),
        "SVRE-VRAd, restart from average (p=1/10)",
    ),
    "svre": (lambda lr: keras_svre.SVRE(lr), "SVRE, no averaging"),
    "se": (lambda lr: keras_svre.Extragradient(lr), "stochastic extragradient"),
    "sgda": (lambda lr: keras.optimizers.SGD(lr), "simultaneous SGD"),
}


class DistanceLog(keras.callbacks.Callback):
    """Records the distance to the solution every `every` passes."""

    def __init__(self, evaluations_per_pass_per_epoch, every, name):
        super().__init__()
        self.passes_per_epoch = evaluations_per_pass_per_epoch
        self.every = every
        self.name = name
        self.passes, self.distances = [0.0], []

    def on_train_begin(self, logs=None):
        if not self.distances:
            self.distances.append(self.model.averaged_distance())

    def on_epoch_end(self, epoch, logs=None):
        passes = (epoch + 1) * self.passes_per_epoch
        distance = self.model.averaged_distance()
        self.passes.append(passes)
        self.distances.append(distance)
        if round(passes) % self.every == 0:
            print(
                f"  {self.name:18s} pass {passes:5.0f}  distance {distance:.3e}",
                flush=True,
            )


def run_method(name, passes, lr, seed, every):
    factory, _ = METHODS[name]
    game = keras_svre.BilinearGame(dim=100, seed=seed)
    # Several iterations per execution keep Keras' per-step overhead small;
    # SVRE's restart draws stay one per iteration (see Game.compile).
    game.compile(optimizer=factory(lr), steps_per_execution=10)
    if keras.backend.backend() == "tensorflow":
        data = game.component_dataset(batch_size=1, seed=seed)
    else:
        # The NumPy minibatches: no TensorFlow needed (e.g. KERAS_BACKEND=jax).
        data = game.component_minibatches(batch_size=1, seed=seed)
    # One epoch = one pass over the n components. Extragradient methods use
    # two components per iteration (2 evaluations), SGDA one.
    log = DistanceLog(1.0, every, name)
    game.fit(data, epochs=passes, verbose=0, callbacks=[log])
    return log


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=600)
    parser.add_argument("--out", default="runs/bilinear")
    parser.add_argument("--lr", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--every",
        type=int,
        default=50,
        help="print the distance every this many passes",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {', '.join(METHODS)}",
    )
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    results, curves = {}, {}
    for name in args.methods.split(","):
        if name not in METHODS:
            parser.error(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
        start = time.perf_counter()
        log = run_method(name, args.passes, args.lr, args.seed, args.every)
        results[name] = {
            "final_distance": float(log.distances[-1]),
            "passes": int(args.passes),
            "initial_distance": float(log.distances[0]),
            "seconds": round(time.perf_counter() - start, 1),
        }
        curves[name] = (log.passes, log.distances)

    (out / "bilinear_results.json").write_text(
        json.dumps(
            {
                "results": results,
                "curves": {
                    k: {"passes": p, "distance": d} for k, (p, d) in curves.items()
                },
            },
            indent=1,
        )
    )
    plot(curves, out / "bilinear_distance.png")
    summary = {
        k: {"final_distance": v["final_distance"], "passes": v["passes"]}
        for k, v in results.items()
    }
    print(json.dumps(summary))


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (passes, distances) in curves.items():
        ax.semilogy(passes, distances, label=METHODS[name][1])
    ax.set_xlabel("passes (n stochastic gradient evaluations each)")
    ax.set_ylabel("distance to the solution")
    ax.set_title("Stochastic bilinear game, d = n = 100, step 0.3")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
