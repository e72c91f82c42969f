"""Did a change make an iteration slower? Two revisions' step cost, interleaved.

    python benchmarks/step_cost_ab.py --before 0439ee6 --after HEAD
    python benchmarks/step_cost_ab.py --before main~3 --methods adam svre --rounds 7

Checks each revision out into a temporary git worktree and, round after
round, runs that revision's own `benchmarks/step_cost.py` for one
configuration (network, method, XLA on or off) in a fresh process,
alternating before/after so that both see the same machine load. Reports,
per configuration, the median over rounds of each revision's median
iteration time and of the paired ratio after/before (1.00: no change), and
each revision's ratio to SGDA-Adam of the same round. On a shared machine
the paired ratio is the number to read.

Writes `benchmarks/results/step_cost_ab.json` (or `--out`) after every round.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile

REPOSITORY = pathlib.Path(__file__).resolve().parents[1]


def _worktree(revision: str, parent: pathlib.Path) -> tuple[pathlib.Path, str]:
    commit = subprocess.run(
        ["git", "-C", str(REPOSITORY), "rev-parse", "--short", revision],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    path = parent / commit
    subprocess.run(
        ["git", "-C", str(REPOSITORY), "worktree", "add", "--detach", "-q",
         str(path), commit],
        check=True,
    )  # fmt: skip
    return path, commit


def _one(tree: pathlib.Path, config: str, steps: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "benchmarks/step_cost.py", "--one", config,
         "--steps", str(steps)],
        cwd=tree, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{tree.name} {config} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["median_iteration_s"]


def _summarise(args, configs, times, commits, rounds_done, out, show):
    rows = []
    for method, jit in configs:
        before, after = times["before", method, jit], times["after", method, jit]
        row = {
            "method": method,
            "jit_compile": bool(jit),
            "before_median_ms": 1e3 * statistics.median(before),
            "after_median_ms": 1e3 * statistics.median(after),
            "paired_ratio_after_to_before": statistics.median(
                a / b for a, b in zip(after, before)
            ),
            "before_ms": [round(1e3 * t, 2) for t in before],
            "after_ms": [round(1e3 * t, 2) for t in after],
        }
        for side, values in (("before", before), ("after", after)):
            adam = times[side, "adam", jit]
            row[f"{side}_ratio_to_sgda_adam"] = statistics.median(
                v / a for v, a in zip(values, adam)
            )
        rows.append(row)
    result = {
        "command": "python benchmarks/step_cost_ab.py " + " ".join(sys.argv[1:]),
        "before": commits["before"],
        "after": commits["after"],
        "network": args.network,
        "steps": args.steps,
        "rounds": rounds_done,
        "machine": f"{os.cpu_count()} CPU cores (shared)",
        "results": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if show:
        print(
            f"\n{'method':10s} {'xla':3s} {'before ms':>9s} {'after ms':>9s} "
            f"{'after/before':>12s} {'ratio to Adam: before':>22s} {'after':>6s}"
        )
        for r in rows:
            print(
                f"{r['method']:10s} {int(r['jit_compile']):3d} "
                f"{r['before_median_ms']:9.1f} {r['after_median_ms']:9.1f} "
                f"{r['paired_ratio_after_to_before']:12.2f} "
                f"{r['before_ratio_to_sgda_adam']:22.2f} "
                f"{r['after_ratio_to_sgda_adam']:6.2f}"
            )
        print(f"wrote {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", required=True, help="git revision")
    parser.add_argument("--after", default="HEAD", help="git revision")
    parser.add_argument("--network", default="mnist_dcgan:16", help="name:width")
    parser.add_argument("--methods", nargs="+", default=["adam", "se-a", "svre"])
    parser.add_argument("--jit", choices=["off", "on", "both"], default="off")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    if "adam" not in args.methods:
        args.methods = ["adam", *args.methods]  # the in-round baseline

    network, width = args.network.split(":")
    jits = {"off": [0], "on": [1], "both": [0, 1]}[args.jit]
    configs = [(m, j) for j in jits for m in args.methods]
    times = {(side, m, j): [] for side in ("before", "after") for m, j in configs}
    out = pathlib.Path(
        args.out or REPOSITORY / "benchmarks" / "results" / "step_cost_ab.json"
    )

    # A kill runs the clean-up below (removing the temporary worktrees) too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="step-cost-ab-") as tmp:
        trees = {}
        try:
            for side in ("before", "after"):
                trees[side] = _worktree(getattr(args, side), pathlib.Path(tmp))
            for round_ in range(args.rounds):
                # Alternate which revision goes first, round to round.
                order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
                for method, jit in configs:
                    for side in order:
                        seconds = _one(
                            trees[side][0], f"{network},{width},{method},{jit}",
                            args.steps,
                        )  # fmt: skip
                        times[side, method, jit].append(seconds)
                # Written after every round: an interrupted run keeps its rounds.
                commits = {side: tree[1] for side, tree in trees.items()}
                last = round_ + 1 == args.rounds
                _summarise(args, configs, times, commits, round_ + 1, out, last)
                print(f"round {round_ + 1}/{args.rounds} done", flush=True)
        finally:
            for path, _ in trees.values():
                subprocess.run(
                    ["git", "-C", str(REPOSITORY), "worktree", "remove", "--force",
                     str(path)],
                    check=False,
                )  # fmt: skip


if __name__ == "__main__":
    main()
