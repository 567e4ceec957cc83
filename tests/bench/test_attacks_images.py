"""The hostile images on one imitated pod: each refused with a 4xx, no OOM kill, still ready.

Prints the attack's figures (``pytest -s``).
"""

from __future__ import annotations

from pathlib import Path

from iweblens.bench.attacks.images import hostile_images, scan_costs
from iweblens.harness.manifest import PodSpec


def test_hostile_images_are_refused_and_photographs_served(
    pod_spec: PodSpec, coco128: list[Path]
) -> None:
    """The 53-byte PNG, the 40 MP lossless JPEG, the 16 MiB ftyp body, a JPEG with sampling
    factors 0, an AVIF without its primary item: each its 4xx, 0 OOM kills; the photographs sent
    while the 15,000-scan JPEG is refused: all 200; the pod ready after."""
    result = hostile_images(pod_spec, coco128)
    print("\n" + "\n".join(result.lines()))
    assert result.passed, result.figures


def test_scan_costs_measure_the_extra_scans_of_a_libjpeg_progressive_file() -> None:
    (cost,) = scan_costs([(64, 48)], subsamplings=("4:2:0",), extra=20)
    assert (cost.scans, cost.mcus, cost.extra) == (10, 4 * 3, 20)
    assert cost.flooded_s > 0
