"""The bench's report: figures as medians with their spread over rounds, ratios next to goals.

Every figure is measured once per round, the engines alternating within a round, so each ratio
is taken per round from figures measured minutes apart at most; the report gives the median over
rounds and the lowest and highest value. The CPU's instruction-set extensions go next to the
figures: engine rankings change with them (OpenCV's Winograd kernels are at the FMA peak on
AVX2-only machines; VNNI makes INT8 about 3x faster than float).
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from iweblens.inference.resources import ISA_FLAGS, isa_flags

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


@dataclass(frozen=True)
class Spread:
    """One figure measured once per round: its median, lowest and highest value."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            raise ValueError("a figure needs at least one measurement")
        return cls(tuple(values))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def cells(self, scale: float = 1.0, digits: int = 2) -> tuple[str, str]:
        """The median, and ``low-high`` (empty for a single measurement), scaled."""
        median = f"{self.median * scale:.{digits}f}"
        if len(self.values) < 2:
            return median, ""
        return (
            median,
            f"{min(self.values) * scale:.{digits}f}-{max(self.values) * scale:.{digits}f}",
        )

    def text(self, scale: float = 1.0, digits: int = 2) -> str:
        """``median (low-high)`` in one cell."""
        median, spread = self.cells(scale, digits)
        return f"{median} ({spread})" if spread else median


@dataclass(frozen=True)
class Claim:
    """One goal line: a ratio measured per round (None when this build cannot measure it yet)."""

    name: str
    goal: str
    value: Spread | None
    met: bool | None
    note: str = ""


def at_most(name: str, values: Sequence[float], limit: float, note: str = "") -> Claim:
    spread = Spread.of(values)
    return Claim(name, f"<= {limit:g}", spread, spread.median <= limit, note)


def at_least(name: str, values: Sequence[float], limit: float, note: str = "") -> Claim:
    spread = Spread.of(values)
    return Claim(name, f">= {limit:g}", spread, spread.median >= limit, note)


def not_measured(name: str, goal: str, why: str) -> Claim:
    return Claim(name, goal, None, None, why)


def reported(name: str, values: Sequence[float], why: str) -> Claim:
    """A ratio shown without a goal; ``why`` says why none applies."""
    return Claim(name, "", Spread.of(values), None, why)


def claims_table(claims: Sequence[Claim]) -> list[str]:
    lines = [
        "| ratio | median | min-max over rounds | goal | met |",
        "|---|---:|---:|---|---|",
    ]
    for claim in claims:
        if claim.value is None:
            lines.append(f"| {claim.name} | | | {claim.goal} | not measured: {claim.note} |")
            continue
        median, spread = claim.value.cells()
        if claim.met is None:
            lines.append(f"| {claim.name} | {median} | {spread} | none | {claim.note} |")
            continue
        verdict = "yes" if claim.met else "**no**"
        note = f" ({claim.note})" if claim.note else ""
        lines.append(f"| {claim.name} | {median} | {spread} | {claim.goal} | {verdict}{note} |")
    return lines


def isa_line(flags: Sequence[str]) -> str:
    """``present ...; absent ...`` for the report, so AVX2-only and AVX-512 runs are told apart."""
    absent = [flag for flag in ISA_FLAGS if flag not in flags]
    return f"{' '.join(flags) or 'unknown'}; absent: {' '.join(absent) or 'none'}"


def load_text(load: Sequence[float]) -> str:
    return " / ".join(f"{value:.2f}" for value in load)


def machine_lines(loads: Sequence[Sequence[float]] = ()) -> list[str]:
    """Date, CPU, ISA, versions, and the load average at the end and, given ``loads`` (the
    ``os.getloadavg()`` of each round's start), at the start of each round."""
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
    end = f"at the end (1/5/15 min): {load_text(os.getloadavg())}"
    starts = ", ".join(f"{load[0]:.2f}" for load in loads)
    return [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu}, {os.cpu_count()} vCPU, {platform.platform()}",
        f"- CPU ISA: {isa_line(isa_flags())}",
        f"- Python {platform.python_version()}; {', '.join(versions)}",
        # Other work on the machine steals the quota's wall time (not its CPU time): a load above
        # the cores it has makes wall-clock figures noisy, whatever the CPU-time ratios say.
        f"- load average (1 min) at the start of each round, then at the end: {starts}; {end}"
        if loads
        else f"- load average {end}",
    ]
