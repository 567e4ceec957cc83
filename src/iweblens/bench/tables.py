"""The Markdown tables of the bench's report: the floor per engine, the served runs.

Each cell is the median over rounds with the lowest and highest round
(:meth:`~iweblens.bench.claims.Spread.text`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from iweblens.bench.claims import Spread
from iweblens.bench.floor import STAGES
from iweblens.bench.goals import EngineFigures
from iweblens.bench.served import ServedRun
from iweblens.config import POD_CPUS


def _mib(value: float) -> float:
    return value / 2**20


def floor_table(engines: Sequence[EngineFigures]) -> list[str]:
    """Per image, one network, in-process under the quota: CPU and wall, and CPU per stage."""
    lines = [
        "| engine | CPU ms/img | wall ms/img | img/s per 0.5 CPU (CPU time) | "
        + " | ".join(f"{stage} CPU ms" for stage in STAGES)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(STAGES),
    ]
    for fig in engines:
        stages = [Spread.of([s.stages[stage] for s in fig.floors]) for stage in STAGES]
        lines.append(
            f"| {fig.engine} | {fig.floor(lambda s: s.cpu_s).text(1000, 1)} "
            f"| {fig.floor(lambda s: s.wall_s).text(1000, 1)} "
            f"| {fig.floor(lambda s: POD_CPUS / s.cpu_s).text(1, 2)} | "
            + " | ".join(stage.text(1000, 1) for stage in stages)
            + " |"
        )
    return lines


def served_row(label: str, runs: Sequence[ServedRun]) -> str:
    def spread(figure: Callable[[ServedRun], float | None], scale: float, digits: int) -> str:
        values = [v for v in map(figure, runs) if v is not None]
        return Spread.of(values).text(scale, digits) if values else "n/a"

    cells = [
        spread(lambda r: r.cpu_s, 1000, 1),
        spread(lambda r: r.cpu_rate, 1, 2),
        spread(lambda r: r.load.throughput, 1, 2),
        spread(lambda r: r.load.mean_s, 1000, 0),
        spread(lambda r: r.load.p99_s, 1000, 0),
        spread(lambda r: _mib(r.rss_bytes), 1, 0),
    ]
    return f"| {label} | {' | '.join(cells)} |"


def served_table(
    engines: Sequence[EngineFigures], naive: Sequence[ServedRun], clients: int, replicas: int
) -> list[str]:
    lines = [
        "| engine @clients x replicas | CPU ms/img (cgroups) | img/s per 0.5 CPU (CPU time) "
        "| img/s (wall) | mean ms | p99 ms | peak RSS MiB (all replicas) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for fig in engines:
        for threads, count in ((1, 1), (clients, 1), (clients, replicas)):
            lines.append(served_row(f"{fig.engine} @{threads}x{count}", fig.served(threads, count)))
    for run in naive:
        lines.append(served_row(f"naive baseline @{run.clients}x1 (once)", [run]))
    return lines
