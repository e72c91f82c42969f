"""The default main job, as a user runs it, scored with the SVRE paper's classifier.

    python benchmarks/default_run.py                  # ~5 minutes on 2 cores
    python benchmarks/default_run.py --seed 100 --out /tmp/trial -- --epochs 40

Runs `keras-svre train` (the defaults, plus any options given after `--`)
in a folder of its own, then `keras-svre sample` (the generator the run
found best) for 5,000 images, and scores them with the paper's MNIST MLP
(read in place from `../shared/reference/`): Inception Score, the share of
each predicted class, and the label histogram's distance to uniform. Records
the wall-clock split the run reports (training, final evaluation, total) and
the command's own time. `--score-run RUN` scores a run made elsewhere
(for instance by the README's first command in a fresh clone) instead.

Writes `<out>/default_run.json` and `<out>/default_run_samples.png` (the
first 100 sampled images); with the default `--out`, into
benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
REFERENCE_CLASSIFIER = (
    REPOSITORY.parent / "shared" / "reference" / "mnist_mlp_classifier.npz"
)


def _run(command):
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num", type=int, default=5000, help="images to score")
    parser.add_argument(
        "--out", default=str(REPOSITORY / "benchmarks" / "results"), help="folder"
    )
    parser.add_argument("--reference-classifier", default=str(REFERENCE_CLASSIFIER))
    parser.add_argument(
        "--keep-run", action="store_true", help="keep the run folder in <out>/run"
    )
    parser.add_argument(
        "--score-run",
        default=None,
        metavar="RUN",
        help="score an existing run folder (e.g. a fresh clone's runs/latest) "
        "instead of training one",
    )
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "keras_svre"]
    if args.score_run:
        run = pathlib.Path(args.score_run).resolve()
        train_command = f"(not run: scored {run})"
        train_seconds = None
    else:
        run = pathlib.Path(tempfile.mkdtemp(prefix="keras-svre-default-"))
        options = ["--seed", str(args.seed), "--out", str(run), *extra]
        train_command = "keras-svre train " + " ".join(options)
        train_seconds = _run([*cli, "train", *options, "--verbose", "2"])
    samples = run / "samples.npy"
    _run([*cli, "sample", "--model", str(run / "model.keras"), "--num", str(args.num),
          "--out", str(samples), "--seed", str(args.seed + 1)])  # fmt: skip

    import numpy as np

    from keras_svre import callbacks, metrics

    images = np.load(samples)
    classifier = metrics.reference_mnist_classifier(args.reference_classifier)
    probabilities = np.asarray(classifier.predict(images, batch_size=500, verbose=0))
    score, score_std = metrics.inception_score(probabilities)
    labels = probabilities.argmax(axis=1)
    shares = np.bincount(labels, minlength=10) / len(labels)
    summary = json.loads((run / "metrics.json").read_text())
    model_generator = summary.get("evaluation", {}).get("best", "ema")
    result = {
        "command": "python benchmarks/default_run.py " + " ".join(sys.argv[1:]),
        "train_command": train_command,
        "seed": args.seed,
        "sampled_generator": model_generator,
        "paper_classifier": {
            "inception_score": round(float(score), 3),
            "inception_score_std": round(float(score_std), 3),
            "class_shares": [round(float(s), 4) for s in shares],
            "classes_present": int(np.sum(shares > 0)),
            "smallest_class_share": round(float(shares.min()), 4),
            **{
                k: round(float(v), 4)
                for k, v in metrics.label_histogram_metrics(probabilities).items()
            },
        },
        "run_seconds": {
            "training": summary.get("training_seconds"),
            "final_evaluation": summary.get("evaluation_seconds"),
            "total_reported_by_run": summary.get("seconds"),
            "command_wall_clock": train_seconds and round(train_seconds, 1),
        },
        "run_summary": summary,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared)",
    }
    (out / "default_run.json").write_text(json.dumps(result, indent=1))
    callbacks.save_image_grid(images[:100], out / "default_run_samples.png", columns=10)
    if args.keep_run:
        shutil.copytree(run, out / "run", dirs_exist_ok=True)
    if not args.score_run:
        shutil.rmtree(run, ignore_errors=True)
    paper = result["paper_classifier"]
    print(
        json.dumps(
            {
                "inception_score": paper["inception_score"],
                "classes_present": paper["classes_present"],
                "smallest_class_share": paper["smallest_class_share"],
                "sampled_generator": model_generator,
                "seconds": result["run_seconds"],
            }
        )
    )


if __name__ == "__main__":
    main()
