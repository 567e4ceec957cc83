"""The study's numbers per (pods, threads) point: the spread of each point's repeated runs."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from iweblens.load.stats import mean, std
from iweblens.study.results import ResultRow


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


def summarize(rows: Iterable[ResultRow]) -> list[Cell]:
    """Group result rows by (pods, threads), sorted by pods then threads."""
    groups: dict[tuple[int, int], list[ResultRow]] = defaultdict(list)
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
