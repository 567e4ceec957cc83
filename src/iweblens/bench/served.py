"""Served runs: the service's replicas and the naive baseline under the pod's CPU quota, with RSS.

``iweblens serve`` replicas behind HAProxy, loaded with the reference client's multipart requests
at 1 and at C client threads, with 1 and with R replicas; the naive baseline
(``iweblens.bench.naive``, the usual implementation of the assignment) at 1 and C threads.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from iweblens.bench.floor import quota_cgroup
from iweblens.config import POD_CPUS
from iweblens.load.client import LoadResult, run_load
from iweblens.study.replicas.local import LocalBackend

NAIVE_START_TIMEOUT_S = 60.0
RSS_SAMPLE_S = 0.2


class RssSampler:
    """Peak resident memory of a set of processes, sampled in the background during a run."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while True:
            self.peak_bytes = max(self.peak_bytes, sum(map(rss_bytes, self._pids())))
            if self._stop.wait(RSS_SAMPLE_S):
                return


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class ServedRun:
    """One closed-loop load run against the service or the baseline."""

    clients: int
    replicas: int
    load: LoadResult
    rss_bytes: int = 0


def _load(
    images: Sequence[Path],
    endpoint: str,
    clients: int,
    timeout: float = 60.0,
    api_key: str | None = None,
) -> LoadResult:
    result = run_load(images, endpoint, clients, timeout=timeout, progress=False, api_key=api_key)
    if result.errors or result.timeouts:
        raise RuntimeError(f"{result.errors} errors, {result.timeouts} timeouts at {endpoint}")
    return result


def measure_service(
    engine: str,
    images: Sequence[Path],
    clients: int,
    replicas: int,
    api_key: str | None = None,
) -> list[ServedRun]:
    """The service with ``engine``: 1 replica at 1 and ``clients`` threads, then ``replicas``.

    The replicas inherit this process's environment, IWEBLENS_API_KEYS included; ``api_key`` is
    the key the load client sends.
    """
    backend = LocalBackend(cpu_limit=POD_CPUS, engine=engine)
    runs = []
    try:
        backend.scale(1)
        name = backend.replica_names()[0]
        cgroup = backend.cgroup_of(name)
        if cgroup is None:
            raise RuntimeError("the replica runs without a CPU quota; the figures would lie")
        for threads in (1, clients):
            with RssSampler(cgroup.pids) as rss:
                load = _load(images, backend.endpoint, threads, api_key=api_key)
            runs.append(ServedRun(threads, 1, load, rss.peak_bytes))
        backend.scale(replicas)
        scaled = _load(images, backend.endpoint, clients, api_key=api_key)
        runs.append(ServedRun(clients, replicas, scaled))
    finally:
        backend.close()
    return runs


def _wait_for_http(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + NAIVE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the naive baseline exited during start-up")
        with contextlib.suppress(requests.ConnectionError):
            requests.get(url, timeout=2)
            return
        time.sleep(0.2)
    raise RuntimeError(f"the naive baseline did not answer at {url}")


# 32 naive requests each load their own network in half a core: answers take 30 s and more, and
# like the reference client the benchmark waits for them rather than count them as lost.
NAIVE_REQUEST_TIMEOUT_S = 600.0


def measure_naive(images: Sequence[Path], clients: int, model_dir: Path) -> list[ServedRun]:
    """The naive baseline at 1 and ``clients`` threads, under the same quota."""
    from iweblens.study.replicas.balanced import LOOPBACK, free_port

    port = free_port()
    command = [sys.executable, "-m", "iweblens.bench.naive", "--port", str(port)]
    runs = []
    with quota_cgroup("naive") as cgroup:
        process = subprocess.Popen(
            cgroup.command([*command, "--model-dir", str(model_dir)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_for_http(f"http://{LOOPBACK}:{port}/", process)
            endpoint = f"http://{LOOPBACK}:{port}/api/object_detection"
            for threads in (1, clients):
                with RssSampler(cgroup.pids) as rss:
                    load = _load(images, endpoint, threads, timeout=NAIVE_REQUEST_TIMEOUT_S)
                runs.append(ServedRun(threads, 1, load, rss.peak_bytes))
        finally:
            process.terminate()
            process.wait()
    return runs
