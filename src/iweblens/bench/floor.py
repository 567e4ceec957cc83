"""The floor: what the CPU allows per image, one network in-process, under the pod's CPU quota.

decode + letterbox + forward + postprocess with no HTTP; its throughput ``F`` is what the service is
judged against. Measured in a child process (``python -m iweblens.bench.floor ENGINE IMAGE...``)
held to the quota by a cgroup, as the study's ``local`` replicas are; also a per-stage profile in
CPU time.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from iweblens.config import POD_CPUS, Settings
from iweblens.models.store import ModelStore
from iweblens.study.replicas.cgroup import CpuCgroup

WARMUP_IMAGES = 2
PROFILE_STAGES = ("decode", "letterbox", "forward", "postprocess")


def measure_floor(
    engine: str, images: Sequence[Path], settings: Settings
) -> tuple[float, dict[str, float]]:
    """Seconds per image of decode + letterbox + forward + postprocess, one net, in-process.

    Also returns a profile: CPU seconds per image of each stage (CPU time, not wall time, so the
    quota's throttling pauses do not land on whichever stage they interrupt), from a second pass.
    """
    from iweblens.inference.cpu import cpu_allotment, threads_for
    from iweblens.inference.detector import Detector
    from iweblens.inference.engines import set_compute_threads
    from iweblens.inference.images import decode_image

    paths = ModelStore(settings.model_dir, progress=False).verified_paths()
    set_compute_threads(threads_for(cpu_allotment()))
    detector = Detector.from_settings(settings, paths, engine)
    payloads = [image.read_bytes() for image in images]
    for data in payloads[:WARMUP_IMAGES]:
        detector.detect_bytes(data)
    start = time.perf_counter()
    for data in payloads:
        detector.detect_bytes(data)
    seconds_per_image = (time.perf_counter() - start) / len(payloads)

    laps = CpuLaps()
    for data in payloads:
        laps.start()
        image = decode_image(data)
        laps.mark("decode")
        blob, box = detector.letterboxer(image)
        laps.mark("letterbox")
        rows = detector.engine.forward(blob)
        laps.mark("forward")
        detector.decode(rows, box, image.shape[1], image.shape[0])
        laps.mark("postprocess")
    return seconds_per_image, {stage: total / len(payloads) for stage, total in laps.totals.items()}


class CpuLaps:
    """CPU seconds spent in each named stage, summed over repetitions."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(PROFILE_STAGES, 0.0)
        self._last = time.process_time()

    def start(self) -> None:
        self._last = time.process_time()

    def mark(self, stage: str) -> None:
        now = time.process_time()
        self.totals[stage] += now - self._last
        self._last = now


@contextlib.contextmanager
def quota_cgroup(label: str) -> Iterator[CpuCgroup]:
    """A fresh cgroup holding ``POD_CPUS``, removed (with anything left in it) afterwards."""
    cgroup = CpuCgroup.create(f"iweblens-bench-{os.getpid()}-{label}", POD_CPUS)
    try:
        yield cgroup
    finally:
        cgroup.remove()


def floor_under_quota(engine: str, images: Sequence[Path]) -> tuple[float, dict[str, float]]:
    """``measure_floor`` in a child process held to the pod's CPU quota."""
    with quota_cgroup(f"floor-{engine}") as cgroup:
        command = [sys.executable, "-m", "iweblens.bench.floor", engine, *map(str, images)]
        output = subprocess.run(
            cgroup.command(command), check=True, capture_output=True, text=True
        ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    return float(result["seconds_per_image"]), result["stages"]


def _floor_child(argv: list[str]) -> None:
    engine, images = argv[0], [Path(arg) for arg in argv[1:]]
    # This process is its own edge: it reads its settings, as the command line does.
    seconds_per_image, stages = measure_floor(engine, images, Settings.from_env())
    print(json.dumps({"engine": engine, "seconds_per_image": seconds_per_image, "stages": stages}))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python -m iweblens.bench.floor ENGINE IMAGE...; see `iweblens bench`")
    _floor_child(sys.argv[1:])
