"""Small, dependency-free statistics for load runs and for summarising a study's results.

Pure Python on purpose: the load client computes a few percentiles per run and the tests check
these against numpy, which they could not do if the code under test were numpy itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterable


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; NaN for no values, so an empty run never passes for a fast one."""
    values = list(values)
    return math.fsum(values) / len(values) if values else math.nan


def std(values: Iterable[float]) -> float:
    """Sample standard deviation (n - 1); 0 for fewer than two values (no spread is measurable)."""
    values = list(values)
    if len(values) < 2:
        return 0.0
    centre = mean(values)
    return math.sqrt(math.fsum((value - centre) ** 2 for value in values) / (len(values) - 1))


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation, numpy's default method."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)
