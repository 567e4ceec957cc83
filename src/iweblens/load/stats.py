"""Small, dependency-free statistics for load runs and for summarising a study's results.

Pure Python on purpose: the load client computes a few percentiles per run and the tests check
these against numpy, which they could not do if the code under test were numpy itself.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


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


@dataclass(frozen=True)
class Cell:
    """One (pods, threads) point of the study: the spread of its per-run mean response times."""

    pods: int
    threads: int
    mean_s: float  # mean over repeats of each run's mean response time
    std_s: float  # sample std over repeats
    repeats: int
    throughput: float  # mean over repeats, successful images per second
    errors: int  # failed requests (timeouts included) summed over repeats


def summarize(rows: Iterable[Mapping[str, Any]]) -> list[Cell]:
    """Group result rows by (pods, threads), sorted by pods then threads."""
    groups: dict[tuple[int, int], list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["pods"], row["threads"]].append(row)
    return [
        Cell(
            pods=pods,
            threads=threads,
            mean_s=mean(row["mean_s"] for row in runs),
            std_s=std(row["mean_s"] for row in runs),
            repeats=len(runs),
            throughput=mean(row["throughput"] for row in runs),
            errors=sum(row["errors"] + row["timeouts"] for row in runs),
        )
        for (pods, threads), runs in sorted(groups.items())
    ]


def by_threads(cells: Sequence[Cell]) -> dict[int, list[Cell]]:
    """The cells of each thread count (one plot line, one table row), each list sorted by pods."""
    lines: dict[int, list[Cell]] = defaultdict(list)
    for cell in sorted(cells, key=lambda cell: (cell.threads, cell.pods)):
        lines[cell.threads].append(cell)
    return dict(lines)
