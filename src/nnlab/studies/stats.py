"""The statistics of a study: Welch's t-test (scipy), Holm's adjustment and a plain verdict."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nnlab.config import higher_is_better

# --------------------------------------------------------------------------- statistics


@dataclass
class Welch:
    """Welch's t-test of mean(a) - mean(b); p is nan (with a note) where the test is undefined."""

    diff: float
    t: float = math.nan
    df: float = math.nan
    p: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    note: str | None = None


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Welch:
    """Welch's unequal-variance t-test (scipy.stats.ttest_ind(equal_var=False)) with its confidence interval.

    With fewer than two values on a side there is no variance estimate, and with zero spread on
    both sides the t statistic divides by zero: scipy would report p = 0 for any difference
    there, which claims certainty seeds cannot give, so p stays nan and the note says why.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if min(len(a), len(b)) < 2:
        return Welch(diff, note=f"n = {min(len(a), len(b))} on one side: no variance estimate, no test")
    if np.ptp(a) == 0 and np.ptp(b) == 0:
        return Welch(diff, note="identical values across seeds on both sides: zero variance, no test")
    from scipy import stats  # heavy (~2 s to import): only a study's report tests its differences

    with warnings.catch_warnings():  # one flat side: scipy warns of float round-off in a variance of ~0
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence)
    return Welch(diff, float(res.statistic), float(res.df), float(res.pvalue), float(ci.low), float(ci.high))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values for a family of tests (nan entries are left out and stay nan)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def in_points(metric: str) -> bool:
    """Fraction metrics (accuracy, MAP, F1, ...) are compared in percentage points; losses in their own units."""
    return "loss" not in metric


def format_amount(value: float, metric: str) -> str:
    return f"{value * 100:.2f} pp" if in_points(metric) else f"{value:.4g}"


def verdict(a: str, b: str, diff: float, p: float, threshold: float, metric: str = "accuracy",
            alpha: float = 0.05, note: str | None = None, p_name: str = "p") -> dict[str, Any]:
    """Plain words for `a - b = diff`: better / worse / within the threshold, and whether p < alpha
    (`p_name` says which p it is: a study passes Holm's adjusted one)."""
    gain = diff if higher_is_better(metric) else -diff
    if not math.isfinite(diff):
        direction = "unknown"
        words = f"{a} vs {b}: no difference to compare"
    elif abs(diff) <= threshold + 1e-12:
        direction = "within"
        words = f"{a} within {format_amount(threshold, metric)} of {b}"
    else:
        direction = "better" if gain > 0 else "worse"
        words = f"{a} {direction} than {b} by {format_amount(abs(diff), metric)}"
    if math.isfinite(p):
        significant: bool | None = bool(p < alpha)
        words += f"; {'significant' if significant else 'not significant'} at {alpha:g} ({p_name} = {p:.3g})"
    else:
        significant = None
        words += f"; untested ({note or 'no p-value'})"
    return {"direction": direction, "significant": significant, "verdict": words}


CHANCE_FACTOR = 1.5  # a mean accuracy below 1.5 x 1/classes is flagged: the variant learned (almost) nothing


def at_chance(mean: float, metric: str, classes: int | None) -> bool:
    """Whether an accuracy-like mean is at chance level (uniform guessing over `classes`)."""
    if not classes or not math.isfinite(mean) or "accuracy" not in metric and metric not in ("macro_f1", "map3"):
        return False
    return mean < CHANCE_FACTOR / classes
