"""Closed-loop load client that speaks to the service exactly as the assignment's reference client.

The reference client (``iWebLens_client.py``) posts every image of a folder from a pool of N
threads, a new connection per request, and ends with ``Total client script time: ..., average
thread time: ...``. Figures are only comparable with the reference if the wire traffic and that
line are the same, so the defaults mirror it; everything else here (percentiles, per-replica
counts, timeouts, machine-readable output) is added on top without changing what goes over the
wire.
"""

from __future__ import annotations

import base64
import csv
import json
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm import tqdm

from iweblens.load.stats import mean, percentile

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
PROTOCOLS = ("multipart", "json")
SERVED_BY_HEADER = "X-Served-By"
MAX_FAILURES_SHOWN = 5  # a dead endpoint fails every request the same way; the counts tell the rest


def list_images(folder: Path) -> list[Path]:
    """The folder's ``*.jpg``, ``*.jpeg`` and ``*.png`` files (any case), sorted by name."""
    return sorted(
        path
        for path in Path(folder).iterdir()
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
    )


@dataclass(frozen=True)
class RequestOutcome:
    """What one request did; ``status`` is None when no response came back."""

    image: Path
    seconds: float
    status: int | None
    served_by: str | None
    error: str | None  # None means success
    timed_out: bool


@dataclass(frozen=True)
class LoadResult:
    """Summary of one load run (the contract with ``iweblens experiment``)."""

    images: int
    wall_s: float
    mean_s: float  # the reference client's "average thread time": all requests, failed ones too
    p50_s: float
    p90_s: float
    p95_s: float
    p99_s: float
    throughput: float  # successful images / wall second
    errors: int  # failures other than timeouts
    timeouts: int
    per_replica: dict[str, int]  # X-Served-By value -> successful responses
    latencies: list[float]  # per-request seconds, in completion order


def image_id(image: Path) -> str:
    """The id the JSON-speaking clients send: a uuid5 (OID namespace) of the image's path string.

    Deterministic, so a rerun sends the same ids and a server log can be matched across runs.
    """
    return str(uuid.uuid5(uuid.NAMESPACE_OID, str(image)))


@dataclass(frozen=True)
class _Body:
    """What one request sends: a multipart file part, or a JSON document (``requests``' names)."""

    files: dict[str, tuple[str, bytes]] | None = None
    json: str | None = None


Check = Callable[[requests.Response], str | None]


def _multipart_request(image: Path) -> tuple[_Body, Check]:
    # A (filename, bytes) pair puts the same part on the wire as the reference's open file:
    # name "image", filename = basename, no part Content-Type.
    return _Body(files={"image": (image.name, image.read_bytes())}), lambda response: None


def _json_request(image: Path) -> tuple[_Body, Check]:
    sent_id = image_id(image)
    payload = {"id": sent_id, "image": base64.b64encode(image.read_bytes()).decode("ascii")}

    def check(response: requests.Response) -> str | None:
        try:
            echoed = response.json().get("id")
        except (ValueError, AttributeError):
            return "response is not a JSON object"
        return None if echoed == sent_id else f"response id {echoed!r} is not {sent_id!r}"

    # json.dumps first: the later clients double-encode (the body is a JSON string of JSON).
    return _Body(json=json.dumps(payload)), check


_REQUEST_BUILDERS = {"multipart": _multipart_request, "json": _json_request}


class Poster:
    """POSTs one image; a new connection per request unless ``keep_alive`` (one per thread).

    With ``api_key``, every request carries ``Authorization: Bearer <key>``; without, the wire
    traffic is the reference client's exactly.
    """

    def __init__(
        self,
        endpoint: str,
        protocol: str,
        timeout: float,
        keep_alive: bool,
        api_key: str | None = None,
    ) -> None:
        if protocol not in _REQUEST_BUILDERS:
            raise ValueError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
        self._endpoint = endpoint
        self._build = _REQUEST_BUILDERS[protocol]
        self._timeout = timeout
        self._keep_alive = keep_alive
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._local = threading.local()

    def _post(self, body: _Body) -> requests.Response:
        if not self._keep_alive:
            return requests.post(
                self._endpoint,
                timeout=self._timeout,
                headers=self._headers,
                files=body.files,
                json=body.json,
            )
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        session: requests.Session = self._local.session
        return session.post(
            self._endpoint,
            timeout=self._timeout,
            headers=self._headers,
            files=body.files,
            json=body.json,
        )

    def __call__(self, image: Path) -> RequestOutcome:
        # Timed like the reference: reading the file and the whole exchange, failures included.
        started = time.perf_counter()
        status = served_by = error = None
        timed_out = False
        try:
            body, check = self._build(image)
            response = self._post(body)
            status = response.status_code
            served_by = response.headers.get(SERVED_BY_HEADER)
            error = check(response) if response.ok else f"HTTP {status}: {response.text[:200]}"
        except requests.Timeout as exc:
            timed_out, error = True, f"timeout after {self._timeout} s: {exc}"
        except (requests.RequestException, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - started
        return RequestOutcome(image, seconds, status, served_by, error, timed_out)


def send_all(
    images: Sequence[Path],
    post: Callable[[Path], RequestOutcome],
    threads: int,
    *,
    progress: bool = True,
) -> tuple[list[RequestOutcome], float]:
    """Post every image once from ``threads`` workers.

    Returns the outcomes in completion order and the wall-clock seconds of the whole run.
    """
    if threads < 1:
        raise ValueError("threads must be at least 1")
    outcomes = []
    started = time.perf_counter()
    with (
        tqdm(total=len(images), unit="img", file=sys.stderr, disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=threads, thread_name_prefix="load") as pool,
    ):
        futures = [pool.submit(post, image) for image in images]
        try:
            for future in as_completed(futures):
                outcomes.append(future.result())
                bar.update()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return outcomes, time.perf_counter() - started


def summarize_load(outcomes: Sequence[RequestOutcome], wall_s: float) -> LoadResult:
    """Reduce per-request outcomes to the run's figures."""
    latencies = [outcome.seconds for outcome in outcomes]
    succeeded = [outcome for outcome in outcomes if outcome.error is None]
    timeouts = sum(outcome.timed_out for outcome in outcomes)
    return LoadResult(
        images=len(outcomes),
        wall_s=wall_s,
        mean_s=mean(latencies),
        p50_s=percentile(latencies, 50),
        p90_s=percentile(latencies, 90),
        p95_s=percentile(latencies, 95),
        p99_s=percentile(latencies, 99),
        throughput=len(succeeded) / wall_s if wall_s > 0 else 0.0,
        errors=len(outcomes) - len(succeeded) - timeouts,
        timeouts=timeouts,
        per_replica=dict(Counter(outcome.served_by or "unknown" for outcome in succeeded)),
        latencies=latencies,
    )


def run_load(
    images: Sequence[Path],
    endpoint: str,
    threads: int,
    *,
    protocol: str = "multipart",
    timeout: float = 60.0,
    keep_alive: bool = False,
    progress: bool = True,
    api_key: str | None = None,
) -> LoadResult:
    """One closed-loop run: every image posted once by ``threads`` workers."""
    post = Poster(endpoint, protocol, timeout, keep_alive, api_key)
    return summarize_load(*send_all(images, post, threads, progress=progress))


def reference_line(result: LoadResult) -> str:
    """The reference client's last line, which existing scripts parse."""
    return f"Total client script time: {result.wall_s}, average thread time: {result.mean_s}"


def summary_lines(result: LoadResult) -> list[str]:
    """The run summary a person reads: counts, latency percentiles, throughput, replicas."""
    replicas = ", ".join(f"{name}={count}" for name, count in sorted(result.per_replica.items()))
    return [
        f"images: {result.images}  errors: {result.errors}  timeouts: {result.timeouts}",
        f"latency s: mean {result.mean_s:.3f}  p50 {result.p50_s:.3f}  p90 {result.p90_s:.3f}"
        f"  p95 {result.p95_s:.3f}  p99 {result.p99_s:.3f}",
        f"throughput: {result.throughput:.2f} images/s",
        f"served by: {replicas or 'nobody'}",
    ]


def write_requests_csv(path: Path, outcomes: Sequence[RequestOutcome]) -> None:
    """One row per request: image, seconds, status, served_by, timed_out, error."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["image", "seconds", "status", "served_by", "timed_out", "error"])
        for outcome in outcomes:
            writer.writerow(
                [
                    outcome.image.name,
                    f"{outcome.seconds:.6f}",
                    outcome.status or "",
                    outcome.served_by or "",
                    int(outcome.timed_out),
                    outcome.error or "",
                ]
            )
