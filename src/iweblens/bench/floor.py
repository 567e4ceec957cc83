"""The floor: what the CPU allows per image, in-process, under the pod's CPU quota.

Decode + letterbox + forward + postprocess (NMS) with one network and no HTTP, the same code the
service runs per request. CPU time per image (the process's CPU clock) is the figure that decides:
on a shared machine other work steals wall time from the quota, never CPU time from the process.
Wall time is kept beside it. Each measurement runs in a fresh child process inside a cgroup that
holds ``POD_CPUS`` (``python -m iweblens.bench.floor MODEL ENGINE IMAGE...`` prints one JSON line;
MODEL is a bundled model's name).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from iweblens.allocator import with_huge_pages
from iweblens.config import POD_CPUS, Settings
from iweblens.harness.cgroup import CpuCgroup
from iweblens.models.repository import DEFAULT_MODEL
from iweblens.models.store import PINNED, ModelStore

WARMUP_IMAGES = 2
STAGES = ("decode", "letterbox", "forward", "postprocess")


@dataclass(frozen=True)
class FloorSample:
    """One pass over the images: seconds per image, CPU and wall, CPU seconds per stage, and
    which letterbox ran (``Letterboxer.implementation``)."""

    cpu_s: float
    wall_s: float
    stages: dict[str, float]
    letterbox: str


class CpuLaps:
    """Process CPU seconds spent in each named stage, summed over repetitions."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(STAGES, 0.0)
        self._last = time.process_time()

    def start(self) -> None:
        self._last = time.process_time()

    def mark(self, stage: str) -> None:
        now = time.process_time()
        self.totals[stage] += now - self._last
        self._last = now


def measure_floor(
    engine: str, images: Sequence[Path], settings: Settings, model: str = DEFAULT_MODEL
) -> FloorSample:
    """One pass of decode + letterbox + forward + postprocess over ``images`` by the bundled
    ``model``, in this process.

    The process's CPU clock (``time.process_time``: every thread, so an engine's worker threads
    count) is read between stages; the network was warmed up on the first images beforehand.
    """
    from iweblens.inference.detector import Detector
    from iweblens.inference.engines import set_compute_threads
    from iweblens.inference.pixels import decode_image
    from iweblens.inference.resources import cpu_allotment, threads_for

    store = ModelStore.in_cache(settings.model_dir, PINNED[model], progress=False)
    paths = store.verified_paths()
    set_compute_threads(threads_for(cpu_allotment()))
    detector = Detector.from_settings(settings, paths, engine)
    payloads = [image.read_bytes() for image in images]
    for data in payloads[:WARMUP_IMAGES]:
        detector.detect_bytes(data)
    laps = CpuLaps()
    started = time.perf_counter()
    for data in payloads:
        laps.start()
        image = decode_image(data, settings.input_size)
        laps.mark("decode")
        blob, box = detector.letterboxer(image.pixels)
        laps.mark("letterbox")
        rows = detector.engine.forward(blob)
        laps.mark("forward")
        detector.postprocess(rows, box, image.width, image.height)
        laps.mark("postprocess")
    wall = time.perf_counter() - started
    count = len(payloads)
    stages = {stage: total / count for stage, total in laps.totals.items()}
    return FloorSample(
        sum(stages.values()), wall / count, stages, detector.letterboxer.implementation
    )


@contextlib.contextmanager
def quota_cgroup(label: str) -> Iterator[CpuCgroup]:
    """A fresh cgroup holding ``POD_CPUS``, removed (with anything left in it) afterwards."""
    cgroup = CpuCgroup.create(f"iweblens-bench-{os.getpid()}-{label}", POD_CPUS)
    try:
        yield cgroup
    finally:
        cgroup.remove()


def floor_under_quota(
    engine: str, images: Sequence[Path], model: str = DEFAULT_MODEL
) -> FloorSample:
    """``measure_floor`` in a fresh child process held to the pod's CPU quota, with the
    service's malloc (``with_huge_pages``): the floor is what serving could reach."""
    with quota_cgroup(f"floor-{model}-{engine}") as cgroup:
        command = [sys.executable, "-m", "iweblens.bench.floor", model, engine]
        command += map(str, images)
        output = subprocess.run(
            cgroup.command(command),
            env=with_huge_pages(os.environ),
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    result = json.loads(output.strip().splitlines()[-1])
    return FloorSample(**result)


def _child(argv: list[str]) -> None:
    # This process is its own edge: it reads its settings, as the command line does.
    model, engine, *images = argv
    sample = measure_floor(engine, [Path(arg) for arg in images], Settings.from_env(), model)
    print(json.dumps(asdict(sample)))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(
            "usage: python -m iweblens.bench.floor MODEL ENGINE IMAGE...; see `iweblens bench`"
        )
    _child(sys.argv[1:])
