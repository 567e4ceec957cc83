"""``iweblens experiment``: the pods x threads x repeats study, one CSV row per load run.

Every run is appended and forced to disk as soon as it ends, and a rerun skips the points the CSV
already holds, so an interrupted study (Ctrl-C, a reboot) resumes where it stopped and loses at
most the run in flight. Before each run every replica must be ready, asked directly rather than
through the balancer; after it, every replica must have served requests (the assignment's "check
the logs" step), otherwise the run is flagged on stderr and its zero count is kept in the CSV.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from types import FrameType

from tqdm import tqdm

from iweblens.load.client import LoadResult, run_load
from iweblens.study.replicas import Backend, BackendError
from iweblens.study.results import ResultRow, append_result

DEFAULT_PODS = (1, 2, 3)
DEFAULT_THREADS = (1, 2, 4, 8, 16, 32)
DEFAULT_REPEATS = 3
# The repository's sample photographs, so the command runs as is from a checkout; the
# assignment's study passes its 128-image input folder instead.
DEFAULT_IMAGES = Path("tests/images")
DEFAULT_OUTPUT = Path("results.csv")


@dataclass(frozen=True)
class Point:
    """One load run of the study."""

    pods: int
    threads: int
    repeat: int


def plan(pods: Sequence[int], threads: Sequence[int], repeats: int) -> list[Point]:
    """Every run, in the order they are made.

    Pods vary slowest, so replicas are scaled once per pod count; within a pod count each repeat is
    a whole sweep over the thread counts, so a passing disturbance of the machine spreads over
    several points instead of spoiling every repeat of one.
    """
    return [Point(p, t, r) for p in pods for r in range(1, repeats + 1) for t in threads]


def pending(
    points: Sequence[Point], rows: Sequence[ResultRow], backend: str, engine: str
) -> list[Point]:
    """The points the CSV does not hold yet for this backend and engine."""
    done = {
        Point(row["pods"], row["threads"], row["repeat"])
        for row in rows
        if row["backend"] == backend and row["engine"] == engine
    }
    return [point for point in points if point not in done]


def wait_until_ready(backend: Backend, pods: int, timeout: float) -> None:
    """Block until exactly ``pods`` replicas exist and each says it is ready."""
    deadline = time.monotonic() + timeout
    while True:
        readiness = backend.readiness()
        if len(readiness) == pods and all(readiness.values()):
            return
        if time.monotonic() > deadline:
            raise BackendError(f"{pods} ready replicas wanted before the run, found {readiness}")
        time.sleep(0.5)


def served_counts(result: LoadResult, replicas: Sequence[str]) -> dict[str, int]:
    """Responses per replica, with an explicit 0 for a replica that served none."""
    return {**dict.fromkeys(replicas, 0), **result.per_replica}


def result_row(
    backend: Backend, engine: str, point: Point, result: LoadResult, per_replica: dict[str, int]
) -> ResultRow:
    """The CSV row of one finished run."""
    return ResultRow(
        timestamp=datetime.now(UTC).isoformat(timespec="seconds"),
        backend=backend.name,
        engine=engine,
        pods=point.pods,
        threads=point.threads,
        repeat=point.repeat,
        images=result.images,
        mean_s=result.mean_s,
        p50_s=result.p50_s,
        p95_s=result.p95_s,
        p99_s=result.p99_s,
        throughput=result.throughput,
        errors=result.errors,
        timeouts=result.timeouts,
        per_replica=per_replica,
        cpu_limit=backend.cpu_limit,
        load1=os.getloadavg()[0],
    )


def warn(message: str) -> None:
    """Loud enough to see under a progress bar, and in any log of the run."""
    tqdm.write(f"WARNING: {message}", file=sys.stderr)


def run_experiment(
    backend: Backend,
    points: Sequence[Point],
    images: Sequence[Path],
    output: Path,
    *,
    engine: str,
    protocol: str = "multipart",
    timeout: float = 60.0,
    ready_timeout: float = 180.0,
    progress: bool = True,
    api_key: str | None = None,
) -> list[ResultRow]:
    """Make the runs in ``points`` (pod counts kept together) and append each to ``output``."""
    written = []
    with tqdm(total=len(points), desc="study", unit="run", disable=not progress) as bar:
        for pods, group in groupby(points, key=lambda point: point.pods):
            bar.set_postfix_str(f"scaling to {pods} pods")
            backend.scale(pods)
            for point in group:
                bar.set_postfix_str(f"pods={pods} threads={point.threads} repeat={point.repeat}")
                wait_until_ready(backend, pods, ready_timeout)
                replicas = backend.replica_names()
                result = run_load(
                    images, backend.endpoint, point.threads,
                    protocol=protocol, timeout=timeout, progress=False, api_key=api_key,
                )  # fmt: skip
                per_replica = served_counts(result, replicas)
                silent = sorted(name for name, count in per_replica.items() if count == 0)
                if silent:
                    warn(f"{point}: {', '.join(silent)} served no request ({per_replica})")
                if result.errors or result.timeouts:
                    warn(f"{point}: {result.errors} errors, {result.timeouts} timeouts")
                row = result_row(backend, engine, point, result, per_replica)
                append_result(output, row)
                written.append(row)
                bar.update()
    return written


@contextlib.contextmanager
def interrupts_unwind() -> Iterator[None]:
    """SIGINT and SIGTERM unwind like Ctrl-C, so the replicas and cgroups are still cleaned up.

    Both handlers are installed whatever the process inherited: a job started in the background
    (``make test &``, ``nohup``) begins with SIGINT ignored, and would otherwise be deaf to it.
    """

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
