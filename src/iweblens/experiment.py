"""``iweblens experiment``: the pods x threads x repeats study, one CSV row per load run.

Every run is appended and forced to disk as soon as it ends, and a rerun skips the points the CSV
already holds, so an interrupted study (Ctrl-C, a reboot) resumes where it stopped and loses at
most the run in flight. Before each run every replica must be ready, asked directly rather than
through the balancer; after it, every replica must have served requests (the assignment's "check
the logs" step), otherwise the run is flagged on stderr and its zero count is kept in the CSV.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from types import FrameType
from typing import Any

from tqdm import tqdm

from .backends import BACKEND_NAMES, Backend, BackendError
from .backends.docker import DEFAULT_IMAGE, DockerBackend
from .backends.kubernetes import DEFAULT_ENDPOINT, KubernetesBackend
from .backends.local import LocalBackend
from .backends.manifest import DEFAULT_MANIFEST, ManifestError, manifest_cpu_limit
from .client import PROTOCOLS, LoadResult, list_images, run_load
from .config import Settings
from .results import append_result, read_results

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
    points: Sequence[Point], rows: Sequence[Mapping[str, Any]], backend: str, engine: str
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
) -> dict[str, Any]:
    """The CSV row of one finished run."""
    return {
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "backend": backend.name,
        "engine": engine,
        "pods": point.pods,
        "threads": point.threads,
        "repeat": point.repeat,
        "images": result.images,
        "mean_s": result.mean_s,
        "p50_s": result.p50_s,
        "p95_s": result.p95_s,
        "p99_s": result.p99_s,
        "throughput": result.throughput,
        "errors": result.errors,
        "timeouts": result.timeouts,
        "per_replica": per_replica,
        "cpu_limit": backend.cpu_limit,
        "load1": os.getloadavg()[0],
    }


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
) -> list[dict[str, Any]]:
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
                    protocol=protocol, timeout=timeout, progress=False,
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


def create_backend(args: argparse.Namespace) -> Backend:
    """The backend chosen on the command line."""
    if args.backend == "local":
        return LocalBackend(
            cpu_limit=args.cpu_limit or 0.5, engine=args.engine, balancer_port=args.balancer_port
        )
    if args.backend == "docker":
        return DockerBackend(
            cpu_limit=args.cpu_limit or manifest_cpu_limit(args.manifest),
            image=args.image,
            engine=args.engine,
            balancer_port=args.balancer_port,
        )
    return KubernetesBackend(
        endpoint=args.endpoint,
        deployment=args.deployment,
        namespace=args.namespace,
        context=args.context,
    )


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


def _run(args: argparse.Namespace) -> int:
    images = list_images(args.images) if args.images.is_dir() else []
    if not images:
        print(f"no .jpg, .jpeg or .png images in {args.images}", file=sys.stderr)
        return 2
    args.engine = args.engine or Settings.from_env().engine
    rows = read_results(args.output) if args.output.exists() else []
    points = plan(args.pods, args.threads, args.repeats)
    todo = pending(points, rows, args.backend, args.engine)
    print(
        f"{len(points) - len(todo)} of {len(points)} runs already in {args.output}; "
        f"{len(todo)} to go over {len(images)} images from {args.images}",
        file=sys.stderr,
    )
    if not todo:
        return 0
    try:
        with interrupts_unwind():
            written = _sweep(args, todo, images)
    except (BackendError, ManifestError) as error:
        print(f"study stopped: {error}\nthe finished runs are in {args.output}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: the finished runs are in {args.output}; rerun", file=sys.stderr)
        raise
    print(f"{len(written)} runs appended to {args.output}", file=sys.stderr)
    return 0


def _sweep(
    args: argparse.Namespace, todo: Sequence[Point], images: Sequence[Path]
) -> list[dict[str, Any]]:
    backend = create_backend(args)
    try:
        return run_experiment(
            backend, todo, images, args.output,
            engine=args.engine, protocol=args.protocol, timeout=args.timeout,
            ready_timeout=args.ready_timeout,
        )  # fmt: skip
    finally:
        backend.close()


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive whole number")
    return value


def _counts(text: str) -> tuple[int, ...]:
    values = tuple(_count(item) for item in text.split(",") if item.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive whole numbers, e.g. 1,2,3")
    return values


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive")
    return value


def _listed(values: Sequence[int]) -> str:
    return ",".join(map(str, values))


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Register ``iweblens experiment``."""
    parser = subparsers.add_parser(
        "experiment",
        help="run the pods x threads study and append one CSV row per run",
        description=(
            "Sweep pods x client threads x repeats, one load run each over the same images, one "
            "row appended (and fsync'd) to the results CSV per run. A rerun skips the points the "
            "CSV already holds; Ctrl-C loses only the run in flight. Each run waits for every "
            "replica to be ready and is flagged on stderr if a replica served no request."
        ),
    )
    parser.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default="local",
        help="where the replicas run (default local: cgroup-limited processes behind HAProxy)",
    )
    parser.add_argument(
        "--pods", type=_counts, default=DEFAULT_PODS, help=f"default {_listed(DEFAULT_PODS)}"
    )
    parser.add_argument(
        "--threads",
        type=_counts,
        default=DEFAULT_THREADS,
        help=f"client thread counts (default {_listed(DEFAULT_THREADS)})",
    )
    parser.add_argument(
        "--repeats", type=_count, default=DEFAULT_REPEATS, help=f"default {DEFAULT_REPEATS}"
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=DEFAULT_IMAGES,
        metavar="FOLDER",
        help=f"photographs sent in every run (default {DEFAULT_IMAGES}; for the assignment, "
        "its 128-image folder)",
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help=f"results CSV, default {DEFAULT_OUTPUT}"
    )
    parser.add_argument(
        "--engine",
        help="the replicas' inference engine (default IWEBLENS_ENGINE or the service's); "
        "for kubernetes, name the one the Deployment runs, it is only recorded",
    )
    parser.add_argument("--protocol", choices=PROTOCOLS, default="multipart")
    parser.add_argument(
        "--timeout", type=_positive_float, default=60.0, help="per-request seconds (default 60)"
    )
    parser.add_argument(
        "--ready-timeout",
        type=_positive_float,
        default=180.0,
        help="seconds to wait for replicas to be ready (default 180)",
    )
    local = parser.add_argument_group("local and docker backends")
    local.add_argument(
        "--cpu-limit",
        type=_positive_float,
        metavar="CORES",
        help="per replica (default 0.5 for local, the manifest's limit for docker)",
    )
    local.add_argument(
        "--balancer-port", type=int, default=0, help="HAProxy's loopback port (default: a free one)"
    )
    local.add_argument(
        "--image", default=DEFAULT_IMAGE, help=f"docker: the service image, default {DEFAULT_IMAGE}"
    )
    local.add_argument(
        "--manifest",
        type=Path,
        default=DEFAULT_MANIFEST,
        help=f"docker: the Deployment whose resources.limits.cpu each container gets "
        f"(default {DEFAULT_MANIFEST})",
    )
    cluster = parser.add_argument_group("kubernetes backend")
    cluster.add_argument(
        "--endpoint",
        default=DEFAULT_ENDPOINT,
        help=f"the Service's URL (default {DEFAULT_ENDPOINT}: kind maps the NodePort there)",
    )
    cluster.add_argument("--deployment", default="iweblens", help="default iweblens")
    cluster.add_argument("--namespace", help="default: kubectl's")
    cluster.add_argument("--context", help="kubectl context (default: the current one)")
    parser.set_defaults(run=_run)
