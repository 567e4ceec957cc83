"""Hostile JSON bodies on one imitated pod (0.5 CPU, 512 MiB): each is refused with a 400 while
the pod keeps every probe and serves the next request; its figures print with ``pytest -s``."""

from __future__ import annotations

from pathlib import Path

from iweblens.bench.attacks.bodies import hostile_json
from iweblens.harness.manifest import PodSpec


def test_nested_arrays_and_deep_json_get_400_without_oom(
    pod_spec: PodSpec, coco128: list[Path]
) -> None:
    """A 6 MiB body of tiny nested arrays and a 1,000-deep one: 400, 0 OOM kills, still ready."""
    result = hostile_json(pod_spec, coco128)
    print("\n" + "\n".join(result.lines()))
    assert result.passed, result.figures
