"""The cost model on one imitated pod: images at the pixel limit whose decode costs several times
a PNG's must be answered (200, or 413 when the pod cannot hold the decode), never OOM-kill it."""

from __future__ import annotations

from pathlib import Path

from iweblens.bench.attacks.formats import costly_formats
from iweblens.harness.manifest import PodSpec


def test_costly_formats_at_the_pixel_limit_do_not_oom_kill_the_pod(
    pod_spec: PodSpec, coco128: list[Path]
) -> None:
    """A 4000 x 3000 AVIF (8-bit 4:2:0) and the costliest variant of the cost-model table."""
    result = costly_formats(pod_spec, coco128)
    print("\n" + "\n".join(result.lines()))
    assert result.passed, result.figures
