"""What a run's records (`metrics.json`, `best.json`) say of a saved model."""

from __future__ import annotations

import json
import pathlib


def why_default_generator(gan, model_path) -> str:
    """Why a saved GAN samples its `default_generator` (for `keras-svre sample`).

    An evaluation chose it only where the run's records say so: the final
    evaluation in `metrics.json` beside `model.keras`, or `--best-by`'s
    record (`best.json`) beside `best.keras`. Otherwise it is the default the
    GAN was built with.
    """
    path = pathlib.Path(model_path)
    default = gan.default_generator
    best = _read_json(path.with_suffix(".json"))
    if best.get("generator") == default and "monitor" in best:
        return (
            f" (the model's default: the generator that scored best by "
            f"{best['monitor']} in the evaluations during training)"
        )
    summary = _read_json(path.parent / "metrics.json")
    evaluation = summary.get("evaluation")
    if path.name == "model.keras" and isinstance(evaluation, dict):
        if evaluation.get("best") == default:
            return (
                " (the model's default: the generator that scored best in "
                "the evaluation before it was saved)"
            )
    return (
        " (the model's default generator; no evaluation of this model chose it: "
        "give --which to pick one)"
    )


def _read_json(path) -> dict:
    """A JSON object from `path`; `{}` if there is none."""
    try:
        value = json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
