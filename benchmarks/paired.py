"""A ratio of two timings that tells the truth on a noisy machine, for the benchmarks whose RESULT is
one: the two sides run interleaved, round by round, their order alternating; each round gives one
paired ratio (a neighbour's burst slows both sides of the round it falls in, and cancels out), and
the figure reported is the median of those ratios with their interquartile range.

Not a benchmark itself: `from paired import paired_ratios, print_ratio` in a script of benchmarks/.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable


def paired_ratios(numerator: Callable[[], float], denominator: Callable[[], float], rounds: int,
                  label: str = "") -> list[float]:
    """numerator() / denominator() for each of `rounds` rounds, the two called back to back, the one
    that goes first alternating; each round's figures go to stderr."""
    ratios = []
    for r in range(rounds):
        if r % 2 == 0:
            top, bottom = numerator(), denominator()
        else:
            bottom, top = denominator(), numerator()
        ratios.append(top / bottom)
        print(f"{label}round {r + 1}: {top:,.4g} / {bottom:,.4g} = {ratios[-1]:.3f}", file=sys.stderr, flush=True)
    return ratios


def median_and_iqr(ratios: list[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile); with one ratio all three are that ratio."""
    if len(ratios) == 1:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, q1, q3


def print_ratio(name: str, ratios: list[float], digits: int = 3) -> None:
    """The summary line, then `RESULT name <median>` and `RESULT name_iqr <q3 - q1>`."""
    median, q1, q3 = median_and_iqr(ratios)
    print(f"{name}: median {median:.{digits}f} of {len(ratios)} paired rounds "
          f"(IQR {q1:.{digits}f} to {q3:.{digits}f})")
    print(f"RESULT {name} {median:.{digits}f}")
    print(f"RESULT {name}_iqr {q3 - q1:.{digits}f}")
