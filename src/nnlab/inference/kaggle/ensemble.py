"""Ensembles: a weighted average of several runs' probabilities (the runs must share their classes)."""

from __future__ import annotations

import numpy as np

from nnlab.errors import NnlabError
from nnlab.runs.run import Run


def ensemble_proba(runs: list[Run], predict_one, weights: str | None) -> np.ndarray:
    """Weighted average of each run's probabilities; every run must share the class list."""
    ws = parse_weights(weights, len(runs))
    classes = runs[0].classes()
    total = None
    for run, w in zip(runs, ws, strict=True):
        if run.classes() != classes:
            raise NnlabError(f"{run.path}: classes differ from {runs[0].path}; an ensemble needs the same classes")
        probs = predict_one(run)
        total = probs * w if total is None else total + probs * w
    return total / sum(ws)


def parse_weights(weights: str | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    try:
        ws = [float(w) for w in weights.split(",")]
    except ValueError:
        raise NnlabError(f"--weights {weights!r}: expected numbers separated by commas") from None
    if len(ws) != n or any(w < 0 for w in ws) or sum(ws) <= 0:
        raise NnlabError(f"--weights {weights!r}: need {n} non-negative weights (one per run) with a positive sum")
    return ws
