"""The bench's report: each goal of the service as a ratio of figures of one run, and the tables."""

from __future__ import annotations

import contextlib
import os
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from iweblens.bench.agreement import INT8_ENGINE
from iweblens.bench.floor import PROFILE_STAGES
from iweblens.bench.served import ServedRun

VERSIONED_PACKAGES = (
    "iweblens",
    "opencv-python-headless",
    "onnxruntime",
    "openvino",
    "onnx",
    "nncf",
    "numpy",
    "flask",
    "uvicorn",
)


@dataclass
class Claim:
    """One ratio next to its goal."""

    name: str
    value: float
    goal: str
    met: bool


@dataclass
class EngineFigures:
    engine: str
    floor_s: float
    stages: dict[str, float]
    served: list[ServedRun] = field(default_factory=list)
    agreement: str = ""

    @property
    def floor_throughput(self) -> float:
        return 1 / self.floor_s

    def run(self, clients: int, replicas: int) -> ServedRun:
        return next(r for r in self.served if (r.clients, r.replicas) == (clients, replicas))


def at_most(name: str, value: float, limit: float) -> Claim:
    return Claim(name, value, f"<= {limit:g}", value <= limit)


def at_least(name: str, value: float, limit: float) -> Claim:
    return Claim(name, value, f">= {limit:g}", value >= limit)


def engine_claims(
    figures: EngineFigures, clients: int, replicas: int, naive: list[ServedRun], fastest: bool
) -> list[Claim]:
    """The issue's per-engine ratios: overhead over the floor, scaling, memory, vs naive."""
    tag = f"[{figures.engine}]"
    one, many = figures.run(1, 1), figures.run(clients, 1)
    spread = figures.run(clients, replicas)
    floor, rate = figures.floor_s, figures.floor_throughput
    naive_one, naive_many = naive
    factor = 6.0 if fastest else 3.0
    return [
        at_most(f"latency@1 / floor time {tag}", one.load.mean_s / floor, 1.10),
        at_least(f"throughput@{clients} / F {tag}", many.load.throughput / rate, 0.95),
        at_least(
            f"{replicas} / 1 replica throughput @{clients} {tag}",
            spread.load.throughput / many.load.throughput,
            2.8,
        ),
        at_most(
            f"mean@{clients}x1 / ideal {clients}/F {tag}",
            many.load.mean_s / (clients / rate),
            1.10,
        ),
        at_most(
            f"mean@{clients}x{replicas} / ideal {clients}/({replicas}F) {tag}",
            spread.load.mean_s / (clients / (replicas * rate)),
            1.10,
        ),
        at_most(f"RSS@{clients} / RSS@1 {tag}", many.rss_bytes / max(one.rss_bytes, 1), 1.2),
        at_least(
            f"throughput@{clients} vs naive {tag}",
            many.load.throughput / naive_many.load.throughput,
            factor,
        ),
        at_least(f"latency@1 naive / ours {tag}", naive_one.load.mean_s / one.load.mean_s, factor),
    ]


def engine_comparison(figures: EngineFigures, reference: EngineFigures) -> Claim:
    goal = 3.5 if figures.engine == INT8_ENGINE else 2.0
    return at_least(
        f"F / F[opencv] [{figures.engine}]",
        figures.floor_throughput / reference.floor_throughput,
        goal,
    )


def machine_lines() -> list[str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for package in VERSIONED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    load = os.getloadavg()
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu}, {os.cpu_count()} vCPU, {platform.platform()}",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
        # Other work on the machine steals the quota's CPU: a load above the cores it has means
        # the figures are noisy, whatever the ratios say.
        f"- load average at the end (1/5/15 min): {' / '.join(f'{v:.2f}' for v in load)}",
    ]


def _mib(value: int) -> str:
    return f"{value / 2**20:.0f}"


def measurement_table(
    engines: list[EngineFigures], naive: list[ServedRun], clients: int, replicas: int
) -> list[str]:
    lines = [
        f"| engine | floor ms/img | F img/s | mean@1 ms | p99@1 ms | img/s @{clients} "
        f"| mean@{clients} ms | img/s @{clients}x{replicas} | RSS@1 MiB | RSS@{clients} MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fig in engines:
        one, many, spread = (
            fig.run(1, 1),
            fig.run(clients, 1),
            fig.run(clients, replicas),
        )
        lines.append(
            f"| {fig.engine} | {fig.floor_s * 1000:.1f} | {fig.floor_throughput:.2f} "
            f"| {one.load.mean_s * 1000:.1f} | {one.load.p99_s * 1000:.1f} "
            f"| {many.load.throughput:.2f} | {many.load.mean_s * 1000:.0f} "
            f"| {spread.load.throughput:.2f} | {_mib(one.rss_bytes)} | {_mib(many.rss_bytes)} |"
        )
    naive_one, naive_many = naive
    lines.append(
        f"| naive baseline | | | {naive_one.load.mean_s * 1000:.1f} "
        f"| {naive_one.load.p99_s * 1000:.1f} | {naive_many.load.throughput:.2f} "
        f"| {naive_many.load.mean_s * 1000:.0f} | | {_mib(naive_one.rss_bytes)} "
        f"| {_mib(naive_many.rss_bytes)} |"
    )
    return lines


def profile_table(engines: list[EngineFigures]) -> list[str]:
    lines = [
        "| engine | " + " | ".join(f"{stage} CPU ms" for stage in PROFILE_STAGES) + " | total |",
        "|---|" + "---:|" * (len(PROFILE_STAGES) + 1),
    ]
    for fig in engines:
        cells = [f"{fig.stages[stage] * 1000:.1f}" for stage in PROFILE_STAGES]
        total = sum(fig.stages.values()) * 1000
        lines.append(f"| {fig.engine} | {' | '.join(cells)} | {total:.1f} |")
    return lines


def claims_table(claims: list[Claim]) -> list[str]:
    lines = ["| ratio | measured | goal | met |", "|---|---:|---|---|"]
    lines += [
        f"| {c.name} | {c.value:.2f} | {c.goal} | {'yes' if c.met else '**no**'} |" for c in claims
    ]
    return lines
