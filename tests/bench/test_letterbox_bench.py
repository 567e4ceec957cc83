"""The letterbox benchmark runs every implementation this machine has and reports them all."""

from __future__ import annotations

from pathlib import Path

import cv2

from iweblens.bench.letterbox import BEFORE, compare, report
from iweblens.inference.letterbox import native_available


def test_compare_reports_each_implementation_with_the_isa(photos: list[Path]) -> None:
    images = [cv2.imread(str(path)) for path in photos[:2]]
    figures = compare(images, 416, rounds=3)
    names = [fig.name for fig in figures]
    assert names[0] == BEFORE and ("native, reused blob" in names) == native_available()
    for fig in figures:
        assert len(fig.cpu_ms) == len(fig.wall_ms) == len(fig.faults) == 3
        assert min(fig.cpu_ms) > 0 and min(fig.wall_ms) > 0 and min(fig.faults) >= 0
    lines = report(figures, len(images), 3)
    assert any(line.startswith("- CPU ISA: ") for line in lines)
    assert all(any(line.startswith(f"| {name} |") for line in lines) for name in names)
    assert sum("less CPU per image than" in line for line in lines) == len(names) - 1
