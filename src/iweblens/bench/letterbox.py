"""``iweblens bench-letterbox``: what one letterbox costs, per image, for each implementation.

Compared on the same decoded photographs (decoding is not timed), in rounds that alternate the
implementations (A/B/C, B/C/A, C/A/B, ...) so that a drift of the machine lands on all of them:

- ``numpy, new blob``: the NumPy code with a new blob per image, as the service ran before;
- ``numpy, reused blob``: the NumPy fallback into one blob the letterboxer owns;
- ``native, reused blob``: the C extension into one blob, what a detector uses where it is built.

Per image: CPU time of this thread (``time.thread_time``, so other processes do not count), wall
time, and minor page faults of this thread (``getrusage(RUSAGE_THREAD)``). Medians over rounds,
with the lowest and highest round as the spread. No CPU quota is applied: CPU time does not
depend on one, and the letterbox runs on one thread either way.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from iweblens.inference.letterbox import Letterbox, Letterboxer, native_available
from iweblens.inference.resources import isa_flags
from iweblens.load.stats import percentile

Letterboxing = Callable[[np.ndarray], tuple[np.ndarray, Letterbox]]
BEFORE = "numpy, new blob"


@dataclass
class Figures:
    """Per-image figures of one implementation, one entry per round."""

    name: str
    cpu_ms: list[float] = field(default_factory=list)
    wall_ms: list[float] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)


def implementations(size: int) -> dict[str, Letterboxing]:
    """The implementations this machine has, by name; the C one only where it was built."""
    found: dict[str, Letterboxing] = {
        BEFORE: lambda image: Letterboxer(size, native=False)(image),
        "numpy, reused blob": Letterboxer(size, native=False),
    }
    if native_available():
        found["native, reused blob"] = Letterboxer(size, native=True)
    return found


def measure_round(
    letterboxing: Letterboxing, images: Sequence[np.ndarray], figures: Figures
) -> None:
    """One pass over ``images``; appends its per-image means to ``figures``."""
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    cpu, wall = time.thread_time(), time.perf_counter()
    for image in images:
        letterboxing(image)
    cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults
    figures.cpu_ms.append(cpu * 1000 / len(images))
    figures.wall_ms.append(wall * 1000 / len(images))
    figures.faults.append(faults / len(images))


def compare(images: Sequence[np.ndarray], size: int, rounds: int) -> list[Figures]:
    """Every implementation, ``rounds`` times each, alternated; one untimed warm-up pass each."""
    found = implementations(size)
    for letterboxing in found.values():
        for image in images:
            letterboxing(image)
    figures = {name: Figures(name) for name in found}
    names = list(found)
    for index in range(rounds):
        for name in names[index % len(names) :] + names[: index % len(names)]:
            measure_round(found[name], images, figures[name])
    return list(figures.values())


def _median_and_spread(values: list[float], digits: int) -> str:
    low, middle, high = (percentile(values, q) for q in (0, 50, 100))
    return f"{middle:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def report(figures: list[Figures], images: int, rounds: int) -> list[str]:
    """Markdown: the machine's ISA, a table of medians (spread), and the CPU-time ratios."""
    flags = ", ".join(isa_flags()) or "none of the listed flags"
    lines = [
        f"- {images} photographs, {rounds} alternated rounds; median (lowest-highest round)",
        f"- CPU ISA: {flags}",
        "",
        "| implementation | CPU ms/image | wall ms/image | minor page faults/image |",
        "|---|---:|---:|---:|",
    ]
    for fig in figures:
        lines.append(
            f"| {fig.name} | {_median_and_spread(fig.cpu_ms, 2)} "
            f"| {_median_and_spread(fig.wall_ms, 2)} | {_median_and_spread(fig.faults, 0)} |"
        )
    before = percentile(next(fig for fig in figures if fig.name == BEFORE).cpu_ms, 50)
    lines.append("")
    for fig in figures:
        if fig.name != BEFORE:
            ratio = before / percentile(fig.cpu_ms, 50)
            lines.append(f"- {fig.name}: {ratio:.1f}x less CPU per image than {BEFORE}")
    return lines


def letterbox_bench(photos: Sequence[Path], size: int, rounds: int) -> list[str]:
    """Decode ``photos`` (not timed), compare the implementations on them, and report."""
    images = [image for path in photos if (image := cv2.imread(str(path))) is not None]
    return report(compare(images, size, rounds), len(images), rounds)
