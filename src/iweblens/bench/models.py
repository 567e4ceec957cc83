"""Each bundled model against the default one (``yolov3-tiny``), measured in the same run.

Per engine and round, another model gets what the default model gets in that round: its floor
(``floor_under_quota``) and one replica serving it alone (``IWEBLENS_MODELS``) at one client thread,
its CPU seconds per image counted by the replica's cgroup. Each ratio to the default model is taken
per round, from the default model's floor and its served run at one client and one replica of the
same round and engine; memory per network comes from ``bench.memory``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iweblens.bench.claims import Spread
from iweblens.bench.floor import FloorSample, floor_under_quota
from iweblens.bench.goals import EngineFigures
from iweblens.bench.served import EngineService, ServedRun
from iweblens.models.repository import DEFAULT_MODEL

SERVED_CLIENTS = 1


@dataclass
class ModelFigures:
    """One model's measurements on one engine, one entry per round: floor, served run @1x1."""

    model: str
    engine: str
    floors: list[FloorSample] = field(default_factory=list)
    served: list[ServedRun] = field(default_factory=list)


def measure_model(
    figures: ModelFigures, images: Sequence[Path], api_key: str | None = None
) -> None:
    """One round of ``figures``' model: its floor, then one fresh replica at one client."""
    figures.floors.append(floor_under_quota(figures.engine, images, figures.model))
    with EngineService(figures.engine, api_key, model=figures.model) as service:
        figures.served.append(service.run(images, SERVED_CLIENTS))


def _served_cpu(run: ServedRun) -> float:
    if run.cpu_s is None:
        raise RuntimeError("a replica's cgroup counted no CPU time")
    return run.cpu_s


def _cells(values: Sequence[float], scale: float, digits: int) -> str:
    return Spread.of(values).text(scale, digits)


def models_table(reference: Sequence[EngineFigures], others: Sequence[ModelFigures]) -> list[str]:
    """Markdown: per engine, the default model's row, then each other model's; CPU ms per image
    (floor, and served @1x1 from the cgroup) as median (min-max) over rounds, and each model's
    ratios to the default model, taken per round."""
    lines = [
        f"| model | engine | floor CPU ms/img | served CPU ms/img @{SERVED_CLIENTS}x1 "
        f"| floor / {DEFAULT_MODEL} | served / {DEFAULT_MODEL} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for base in reference:
        mine = [fig for fig in others if fig.engine == base.engine]
        if not mine:
            continue
        base_served = base.served(SERVED_CLIENTS, 1)
        base_floor = [sample.cpu_s for sample in base.floors]
        lines.append(
            f"| {DEFAULT_MODEL} | {base.engine} | {_cells(base_floor, 1000, 1)} "
            f"| {_cells([_served_cpu(run) for run in base_served], 1000, 1)} | 1 | 1 |"
        )
        for fig in mine:
            floor = [sample.cpu_s for sample in fig.floors]
            served = [_served_cpu(run) for run in fig.served]
            lines.append(
                f"| {fig.model} | {fig.engine} | {_cells(floor, 1000, 1)} "
                f"| {_cells(served, 1000, 1)} "
                f"| {_cells(_ratios(floor, base_floor), 1, 2)} "
                f"| {_cells(_ratios(served, [_served_cpu(r) for r in base_served]), 1, 2)} |"
            )
    return lines


def _ratios(values: Sequence[float], bases: Sequence[float]) -> list[float]:
    """Each round's value over the default model's of the same round."""
    return [value / base for value, base in zip(values, bases, strict=True)]
