"""The quality benchmark's report: summaries, tables and figures from its runs.

`benchmarks/quality_mnist.py` trains and writes each run's record; this
turns a set of records into what its JSON, its `--table` and its figures
show. Pure NumPy and matplotlib: `python benchmarks/quality_mnist.py --out
X --replot` / `--table` re-derive everything from `X.json` without training
(or TensorFlow's models).
"""

from __future__ import annotations

import json
import math

import numpy as np

GENERATORS = ("current", "average", "ema")


CLASSIFIERS = ("paper", "project")


SUMMARY_KEYS = (
    [f"is_{g}_{c}" for c in CLASSIFIERS for g in GENERATORS]
    + [f"fid_{g}_{c}" for c in CLASSIFIERS for g in GENERATORS]
    + [f"entropy_{g}_project" for g in GENERATORS]
    + [
        f"grad_{m}_{p}"
        for m in ("second_moment", "variance")
        for p in ("generator", "discriminator")
    ]
)


def summarize(runs, methods, labels):
    """Final and best values per method: mean, std and values over seeds."""
    summary = {}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        final, best = {}, {}
        for key in SUMMARY_KEYS:
            # The last value measured (the gradient variance is measured on
            # the regular schedule only, not again at the budget's end).
            final[key] = _stats([_last(r["curve"], key) for r in mine])
            if key.startswith(("is_", "fid_")):
                pick = max if key.startswith("is_") else min
                trained = [
                    [p.get(key) for p in r["curve"] if p["iteration"] > 0] for r in mine
                ]
                best[key] = _stats(
                    [
                        pick((v for v in values if v is not None), default=None)
                        for values in trained
                    ]
                )
        summary[method] = {
            "label": labels[method],
            "seeds": [r["seed"] for r in mine],
            "iterations": _stats([r["iterations"] for r in mine]),
            "evaluations": _stats([r["evaluations"] for r in mine]),
            "snapshots": _stats([r["snapshots"] for r in mine]),
            "seconds": _stats([r["seconds"] for r in mine]),
            "train_seconds": _stats([r.get("train_seconds") for r in mine]),
            "final": final,
            "best": best,
            # The gradient noise along the whole run: median, min and max
            # over every measurement of every seed.
            "measured": {
                key: _spread([p.get(key) for r in mine for p in r["curve"]])
                for key in SUMMARY_KEYS
                if key.startswith("grad_")
            },
        }
    return summary


def equal_iterations(
    runs, methods, keys=("is_current_paper", "fid_current_project"), reference="se-a"
):
    """Each method at the same number of iterations, whatever it cost.

    The budget compares the methods at equal evaluations, and an SVRE
    iteration costs two to five times an SE-A one. This separates what an
    iteration of each method buys from what it costs, at two points:

    - `common`: the last iteration at which every run was measured (the
      schedules are multiples of each other), exact values;
    - `shortest`: the fewest iterations any run reached, each run's curve
      interpolated linearly between its two neighbouring measurements;

    and, when `reference` ran, `break_even` (see there).
    """
    common = _common_iterations(runs)
    points = {"shortest": min((r["iterations"] for r in runs), default=None)}
    if common:
        points["common"] = common[-1]
    result = {"iterations": points, "methods": {}}
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        if not mine:
            continue
        row = {}
        for name, iteration in points.items():
            if iteration is None:
                continue
            # None where a run was not measured that early.
            row[name] = {
                key: _stats([_at_iteration(r["curve"], key, iteration) for r in mine])
                for key in ("evaluations", *keys)
            }
        result["methods"][method] = row
    if reference in methods:
        result["break_even"] = break_even(runs, methods, reference)
    return result


def break_even(runs, methods, reference, key="is_current_paper"):
    """What one iteration of each method is worth in `reference`'s evaluations.

    For each method, the reference's iterations to first reach the method's
    final mean score (its mean curve over seeds, interpolated linearly), in
    evaluations, divided by the method's own iterations: the most an
    iteration of that method could cost and still be level with the
    reference at equal evaluations. Beside it, what the iteration cost.
    `None` where the reference never reached the score.
    """
    mine = [r for r in runs if r["method"] == reference]
    steps = _common_iterations(mine)
    curve = [
        (
            step,
            np.mean([_at_iteration(r["curve"], key, step) for r in mine]),
            np.mean([_at_iteration(r["curve"], "evaluations", step) for r in mine]),
        )
        for step in steps
    ]
    result = {}
    for method in methods:
        theirs = [r for r in runs if r["method"] == method]
        if method == reference or not theirs:
            continue
        target = float(np.mean([_last(r["curve"], key) for r in theirs]))
        iterations = float(np.mean([r["iterations"] for r in theirs]))
        evaluations = float(np.mean([r["evaluations"] for r in theirs]))
        spent = _first_reach(curve, target)
        result[method] = {
            key: target,
            "iterations": iterations,
            "evaluations_per_iteration": evaluations / iterations,
            "reference_evaluations": spent,
            "break_even_evaluations_per_iteration": (
                None if spent is None else spent / iterations
            ),
        }
    return result


def _common_iterations(runs):
    """The iterations (after the start) at which every run was measured, sorted."""
    measured = [
        {p["iteration"] for p in r["curve"] if p["iteration"] > 0} for r in runs
    ]
    return sorted(set.intersection(*measured)) if measured else []


def _first_reach(curve, target):
    """The evaluations at which `(iteration, score, evaluations)` first reach `target`."""
    previous = None
    for step in curve:
        if step[1] >= target:
            if previous is None:
                return float(step[2])
            share = (target - previous[1]) / (step[1] - previous[1])
            return float(previous[2] + share * (step[2] - previous[2]))
        previous = step
    return None


def _at_iteration(curve, key, iteration):
    x, y = _points(curve, key, "iteration")
    if not x or not x[0] <= iteration <= x[-1]:
        return None
    return float(np.interp(iteration, x, y))


def _finite(values):
    return [v for v in values if v is not None and math.isfinite(v)]


def _stats(values):
    values = _finite(values)
    if not values:
        return None
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values)),
        "values": [round(v, 4) for v in values],
    }


# Lag 0 (the snapshot's own iteration, where SVRE's estimate is exact) is
# left out.
LAG_BINS = (1, 5, 10, 20, 50, 100, 200)


NOISE_KEYS = ("ratio_svre", "ratio_used", "ratio_oracle", "alpha_star")


def noise_by_lag(runs, methods):
    """`CorrectionNoise`'s measurements, median per lag bin, over all seeds.

    Per method and player, for each bin of iterations since the snapshot
    (`LAG_BINS`: [1, 5), [5, 10), ..., [200, ...)), the median of each
    ratio and of alpha*, with the number of measurements. None without
    measurements.
    """
    result = {}
    for method in methods:
        records = [
            x
            for r in runs
            if r["method"] == method
            for x in r.get("correction_noise", [])
        ]
        if not records:
            continue
        per_player = {}
        for player in ("generator", "discriminator"):
            rows = []
            for low, high in zip(LAG_BINS, (*LAG_BINS[1:], None)):
                inside = [
                    x
                    for x in records
                    if x["lag"] >= low and (high is None or x["lag"] < high)
                ]
                row = {"lags": [low, high], "count": len(inside)}
                for key in NOISE_KEYS:
                    values = _finite([x.get(f"{key}_{player}") for x in inside])
                    row[key] = float(np.median(values)) if values else None
                rows.append(row)
            per_player[player] = rows
        result[method] = per_player
    return result or None


def _spread(values):
    values = _finite(values)
    if not values:
        return None
    return {
        "median": float(np.median(values)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
        "count": len(values),
    }


def plot(runs, methods, labels, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (
            "is_current_paper",
            "evaluations",
            "Inception Score (paper's MLP), current G",
            False,
        ),
        (
            "is_current_paper",
            "train_seconds",
            "Inception Score (paper's MLP), current G",
            False,
        ),
        ("is_ema_paper", "evaluations", "Inception Score (paper's MLP), EMA G", False),
        (
            "fid_current_project",
            "evaluations",
            "FID (project classifier), current G",
            True,
        ),
        (
            "is_current_paper",
            "iteration",
            "Inception Score (paper's MLP), current G, per iteration",
            False,
        ),
        (
            "fid_current_project",
            "iteration",
            "FID (project classifier), current G, per iteration",
            True,
        ),
        (
            "grad_variance_generator",
            "evaluations",
            "generator's estimate: E||d - mean d||^2",
            True,
        ),
        (
            "grad_variance_discriminator",
            "evaluations",
            "discriminator's estimate: E||d - mean d||^2",
            True,
        ),
    ]
    x_labels = {
        "evaluations": "minibatch gradient evaluations",
        "train_seconds": "training seconds (1 CPU thread, measurements excluded)",
        "iteration": "iterations, whatever they cost",
    }
    figure, axes = plt.subplots(2, 4, figsize=(21, 9))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (key, x_key, title, log_scale), axis in zip(panels, axes.flat):
        for color, method in zip(colors, methods):
            mine = [r for r in runs if r["method"] == method]
            if not mine:
                continue
            curves = [_points(r["curve"], key, x_key) for r in mine]
            curves = [(x, y) for x, y in curves if x]
            if not curves:
                continue
            for x, y in curves:
                axis.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
            # The mean over seeds of the k-th measurement (SVRE's random
            # snapshots move its x a little from seed to seed); geometric on
            # log axes, where one seed's outlier would dominate.
            length = min(len(x) for x, _ in curves)
            x = np.mean([x[:length] for x, _ in curves], axis=0)
            y = np.array([y[:length] for _, y in curves])
            if log_scale:
                # A measurement taken at a snapshot has zero variance: it is
                # drawn on its seed's thin line and left out of the mean.
                y = np.exp(np.nanmean(np.log(np.where(y > 0, y, np.nan)), axis=0))
            else:
                y = y.mean(axis=0)
            axis.plot(x, y, color=color, linewidth=2, label=labels[method])
        if x_key == "iteration" and runs:
            # Where every method still has a curve; the cheap ones go on.
            axis.set_xlim(0, 2 * min(r["iterations"] for r in runs))
        axis.set_xlabel(x_labels[x_key])
        axis.set_title(title, fontsize=10)
        if log_scale:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes.flat[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_noise(runs, methods, labels, binned, path):
    """`CorrectionNoise`'s ratios against the lag: one panel per player.

    Faint points: every measurement after the snapshot's own iteration
    (where the variance-reduced estimate is exact: ratio 0). Lines: the
    medians per lag bin (`noise_by_lag`) with alpha = 1 (solid), as trained
    (dashed, for methods whose alpha is not 1) and the oracle's (dotted);
    `binned` is `noise_by_lag(runs, methods)`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, player in zip(axes, ("generator", "discriminator")):
        for color, method in zip(colors, methods):
            records = [
                x
                for r in runs
                if r["method"] == method
                for x in r.get("correction_noise", [])
                if x["lag"] > 0
            ]
            if not records:
                continue
            trained_differs = any(
                not np.isclose(x[f"ratio_used_{player}"], x[f"ratio_svre_{player}"])
                for x in records
            )
            lines = [("ratio_svre", "-", "alpha = 1")]
            if trained_differs:
                lines.append(("ratio_used", "--", "as trained"))
            lines.append(("ratio_oracle", ":", "oracle alpha*"))
            for key, style, name in lines:
                axis.scatter(
                    [x["lag"] for x in records],
                    [x[f"{key}_{player}"] for x in records],
                    s=4,
                    color=color,
                    alpha=0.12,
                )
                rows = [r for r in binned[method][player] if r[key] is not None]
                centres = [
                    np.sqrt(max(low, 1) * (high or 2 * low))
                    for low, high in (r["lags"] for r in rows)
                ]
                axis.plot(
                    centres,
                    [r[key] for r in rows],
                    style,
                    color=color,
                    marker="o",
                    markersize=3,
                    label=f"{labels[method]}: {name}",
                )
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("iterations since the snapshot")
        axis.set_title(
            f"{player}: Var[estimate] / Var[plain F_i(w)] (lines: medians per bin)",
            fontsize=10,
        )
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _last(curve, key):
    values = [p[key] for p in curve if p.get(key) is not None]
    return values[-1] if values else None


def _points(curve, key, x_key="evaluations"):
    points = [
        (p[x_key], p[key])
        for p in curve
        if p.get(key) is not None and p.get(x_key) is not None and math.isfinite(p[key])
    ]
    return [x for x, _ in points], [y for _, y in points]


def analyse(runs, methods, labels):
    """Everything the result file holds beside the runs: a dict of parts."""
    return {
        "summary": summarize(runs, methods, labels),
        "equal_iterations": equal_iterations(runs, methods),
        "noise_by_lag": noise_by_lag(runs, methods),
    }


def draw(runs, methods, labels, out):
    """`<out>.png`, and `<out>_noise.png` where the runs measured the noise."""
    plot(runs, methods, labels, out.with_suffix(".png"))
    binned = noise_by_lag(runs, methods)
    if binned:
        plot_noise(
            runs, methods, labels, binned, out.with_name(out.name + "_noise.png")
        )


def replot(out, labels):
    """Recomputes the analysis and the figures of an existing result file."""
    result = json.loads(out.with_suffix(".json").read_text())
    methods = list(result["config"]["methods"])
    result.update(analyse(result["runs"], methods, labels))
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    draw(result["runs"], methods, labels, out)


def table(out):
    """The README's table: final values, mean +- std over seeds."""
    result = json.loads(out.with_suffix(".json").read_text())
    columns = [
        ("is_current_paper", "IS current"),
        ("is_ema_paper", "IS EMA"),
        ("is_average_paper", "IS average"),
        ("fid_current_project", "FID current"),
        ("fid_ema_project", "FID EMA"),
    ]
    lines = [
        "| method | " + " | ".join(c for _, c in columns) + " | best IS current "
        "| training s |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for summary in result["summary"].values():
        cells = []
        for key, _ in columns:
            value = summary["final"].get(key)
            cells.append(f"{value['mean']:.2f} ± {value['std']:.2f}" if value else "-")
        best = summary["best"].get("is_current_paper")
        seconds = summary.get("train_seconds")
        cells.append(f"{best['mean']:.2f} ± {best['std']:.2f}" if best else "-")
        cells.append(f"{seconds['mean']:.0f}" if seconds else "-")
        lines.append(f"| {summary['label']} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    equal = result.get("equal_iterations")
    if equal:
        print(_equal_iterations_table(equal, result["summary"]))
    if equal and equal.get("break_even"):
        print(_break_even_table(equal["break_even"], result["summary"]))
    if result.get("noise_by_lag"):
        print(_noise_table(result["noise_by_lag"], result["summary"]))


def _noise_table(noise, summary):
    """Var[estimate] / Var[plain] and alpha* against the lag, median per bin."""
    lines = []
    for method, players in noise.items():
        for player, rows in players.items():
            bins = [
                f"{low}-{high - 1}" if high else f"{low}+"
                for low, high in (r["lags"] for r in rows)
            ]
            lines += [
                "",
                f"**{summary[method]['label']}, {player}** (measurements per bin: "
                + ", ".join(str(r["count"]) for r in rows)
                + ")",
                "",
                "| iterations since the snapshot | " + " | ".join(bins) + " |",
                "|---" * (len(bins) + 1) + "|",
            ]
            names = {
                "ratio_svre": "SVRE (alpha = 1) / plain",
                "ratio_used": "as trained / plain",
                "ratio_oracle": "oracle alpha* / plain",
                "alpha_star": "alpha* (size-weighted)",
            }
            for key, name in names.items():
                cells = ["-" if r[key] is None else f"{r[key]:.2f}" for r in rows]
                lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _break_even_table(rows, summary):
    """What an iteration cost, and what it could cost to be level with SE-A."""
    lines = [
        "",
        "| method | final IS current | iterations | evaluations per iteration "
        "| SE-A's evaluations to that IS | break-even evaluations per iteration |",
        "|---|---|---|---|---|---|",
    ]
    for method, row in rows.items():
        spent, worth = (
            row["reference_evaluations"],
            row["break_even_evaluations_per_iteration"],
        )
        lines.append(
            f"| {summary[method]['label']} | {row['is_current_paper']:.2f} "
            f"| {row['iterations']:,.0f} | {row['evaluations_per_iteration']:.2f} "
            f"| {'not reached' if spent is None else f'{spent:,.0f}'} "
            f"| {'-' if worth is None else f'{worth:.2f}'} |"
        )
    return "\n".join(lines)


def _equal_iterations_table(equal, summary):
    """Each method at the same iterations: evaluations spent, IS and FID."""
    at = equal["iterations"]
    names = [n for n in ("common", "shortest") if at.get(n)]
    if len(names) == 2 and at["common"] == at["shortest"]:
        names = ["common"]
    header = "| method |"
    for name in names:
        header += (
            f" evaluations at {at[name]:.0f} iterations | IS current | FID current |"
        )
    lines = ["", header, "|---" * (1 + 3 * len(names)) + "|"]
    for method, row in equal["methods"].items():
        cells = []
        for name in names:
            values = row.get(name, {})
            score, fid = (
                values.get("is_current_paper"),
                values.get("fid_current_project"),
            )
            spent = values.get("evaluations")
            cells.append(f"{spent['mean']:,.0f}" if spent else "-")
            cells.append(f"{score['mean']:.2f} ± {score['std']:.2f}" if score else "-")
            cells.append(f"{fid['mean']:.1f}" if fid else "-")
        lines.append(f"| {summary[method]['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline(summary):
    final = summary["final"]
    return {
        key: round(final[key]["mean"], 3)
        for key in ("is_current_paper", "is_current_project", "fid_current_project")
        if final.get(key)
    }
