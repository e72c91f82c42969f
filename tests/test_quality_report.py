"""The quality benchmark's report (`benchmarks/quality_report.py`) on made-up runs.

Values worked by hand: every method at equal iterations, the break-even cost
per iteration against SE-A, and the noise medians per lag bin.
"""

import importlib.util
import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.jax  # pure NumPy: runs on every backend

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_report.py"
_SPEC = importlib.util.spec_from_file_location("quality_report", _PATH)
report = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(report)


def _run(method, seed, points, iterations, evaluations, **extra):
    """A run record: `points` are (iteration, evaluations, IS, FID)."""
    curve = [
        {
            "iteration": i,
            "evaluations": e,
            "is_current_paper": score,
            "fid_current_project": fid,
        }
        for i, e, score, fid in points
    ]
    return {
        "method": method,
        "seed": seed,
        "iterations": iterations,
        "evaluations": evaluations,
        "curve": curve,
        **extra,
    }


def _runs():
    # SE-A: 2 evaluations per iteration; its seeds differ by -+0.1 IS.
    se_a = [
        _run(
            "se-a",
            s,
            [
                (500, 1000, 5.5 + d, 60),
                (1000, 2000, 6.0 + d, 40),
                (2000, 4000, 7.0 + d, 20),
            ],
            2000,
            4000,
        )
        for s, d in ((0, -0.1), (1, 0.1))
    ]
    # An SVRE-like method: 5 evaluations per iteration, ending at IS 6.5
    # after 800 and 900 iterations.
    svre = [
        _run("svre-vrad", 0, [(500, 2500, 5.0, 80), (800, 4000, 6.5, 50)], 800, 4000),
        _run("svre-vrad", 1, [(500, 2500, 5.0, 80), (900, 4500, 6.5, 50)], 900, 4500),
    ]
    return se_a + svre


def test_equal_iterations_common_and_shortest_points():
    runs = _runs()
    result = report.equal_iterations(runs, ["se-a", "svre-vrad"])
    # Every run was measured at 500 iterations; the shortest run has 800.
    assert result["iterations"] == {"shortest": 800, "common": 500}
    se_a, svre = result["methods"]["se-a"], result["methods"]["svre-vrad"]
    assert se_a["common"]["is_current_paper"]["values"] == [5.4, 5.6]
    assert se_a["common"]["evaluations"]["mean"] == 1000
    assert svre["common"]["evaluations"]["mean"] == 2500
    # At 800: SE-A interpolated between 500 and 1000 (3/5 of the way).
    assert se_a["shortest"]["is_current_paper"]["values"] == [5.7, 5.9]
    assert se_a["shortest"]["evaluations"]["mean"] == pytest.approx(1600)
    # Seed 0 ends at 800 (IS 6.5); seed 1 interpolates 5.0 -> 6.5 between
    # 500 and 900: 5.0 + 1.5 * 300 / 400 = 6.125.
    assert svre["shortest"]["is_current_paper"]["values"] == [6.5, 6.125]
    assert svre["shortest"]["fid_current_project"]["values"] == [50, 57.5]
    assert svre["shortest"]["evaluations"]["mean"] == pytest.approx(4000)
    # Beyond a run's last measurement there is nothing to interpolate.
    late = report.equal_iterations(
        [runs[0], _run("x", 0, [(100, 100, 1.0, 9)], 100, 100)], ["se-a", "x"]
    )
    assert late["iterations"]["shortest"] == 100
    assert late["methods"]["se-a"]["shortest"]["is_current_paper"] is None


def test_break_even_against_se_a():
    runs = _runs()
    rows = report.break_even(runs, ["se-a", "svre-vrad"], "se-a")
    row = rows["svre-vrad"]
    # Final IS: 6.5 on both seeds. SE-A's mean curve: 6.0 at 2,000
    # evaluations, 7.0 at 4,000, so 6.5 at 3,000; over 850 iterations.
    assert row["is_current_paper"] == pytest.approx(6.5)
    assert row["iterations"] == 850
    assert row["evaluations_per_iteration"] == pytest.approx(5.0)
    assert row["reference_evaluations"] == pytest.approx(3000)
    assert row["break_even_evaluations_per_iteration"] == pytest.approx(3000 / 850)
    assert "se-a" not in rows


def test_break_even_is_none_where_the_reference_never_gets_there():
    runs = _runs()
    for run in runs:
        if run["method"] == "svre-vrad":
            run["curve"][-1]["is_current_paper"] = 9.0
    row = report.break_even(runs, ["se-a", "svre-vrad"], "se-a")["svre-vrad"]
    assert row["reference_evaluations"] is None
    assert row["break_even_evaluations_per_iteration"] is None


def test_noise_by_lag_bins_leave_out_the_snapshot_itself():
    records = [
        # At the snapshot: exact, left out.
        {"lag": 0, "ratio_svre_generator": 0.0},
        {"lag": 1, "ratio_svre_generator": 0.5},
        {"lag": 4, "ratio_svre_generator": 0.7},
        {"lag": 3, "ratio_svre_generator": 0.9},
        {"lag": 12, "ratio_svre_generator": 2.0},
        {"lag": 250, "ratio_svre_generator": math.nan},
    ]
    runs = [{"method": "svre-vrad", "correction_noise": records}]
    rows = report.noise_by_lag(runs, ["svre-vrad"])["svre-vrad"]["generator"]
    by_bin = {tuple(r["lags"]): r for r in rows}
    assert by_bin[(1, 5)]["count"] == 3
    assert by_bin[(1, 5)]["ratio_svre"] == pytest.approx(0.7)
    assert by_bin[(10, 20)]["ratio_svre"] == pytest.approx(2.0)
    assert by_bin[(5, 10)]["ratio_svre"] is None
    # A non-finite measurement counts but gives no median.
    assert by_bin[(200, None)]["count"] == 1
    assert by_bin[(200, None)]["ratio_svre"] is None
    assert report.noise_by_lag([{"method": "se-a", "curve": []}], ["se-a"]) is None
