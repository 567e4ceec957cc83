"""Served figures: the service (and the naive baseline) under load, each replica at the pod's quota.

The service is the study's ``local`` backend: ``iweblens serve`` replicas, each in a cgroup that
holds ``POD_CPUS`` and counts its CPU time, round-robin behind HAProxy, loaded with the
reference client's multipart requests. Every run records wall-clock figures (throughput, latency),
the replicas' CPU seconds per image (the cgroups' own count: it includes HTTP, decoding and
everything else a pod pays for, and no time stolen by other work on the machine) and their peak
resident memory. One ``EngineService`` per engine stays up across rounds, so the bench can
alternate engines without restarting them. A service of another bundled model than the default runs
its replicas with ``IWEBLENS_MODELS`` naming that model alone.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from iweblens.bench.floor import quota_cgroup
from iweblens.config import POD_CPUS, env_name
from iweblens.harness.cgroup import CpuCgroup
from iweblens.harness.procfs import Sampler, rss_bytes
from iweblens.load.client import LoadResult, run_load
from iweblens.study.replicas.local import LocalBackend

RSS_SAMPLE_S = 0.2
NAIVE_START_TIMEOUT_S = 60.0
# 32 naive requests each load their own network in half a core: answers take 30 s and more, and
# like the reference client the benchmark waits for them rather than count them as lost.
NAIVE_REQUEST_TIMEOUT_S = 600.0


@dataclass
class ServedRun:
    """One closed-loop load run: wall-clock results, CPU seconds per image, peak RSS (all pods)."""

    clients: int
    replicas: int
    load: LoadResult
    cpu_s: float | None
    rss_bytes: int

    @property
    def cpu_rate(self) -> float | None:
        """Images per second one pod's quota buys, from CPU time (what a 0.5-CPU pod serves)."""
        return POD_CPUS / self.cpu_s if self.cpu_s else None


def _cpu_seconds(cgroups: Sequence[CpuCgroup]) -> float | None:
    counts = [cgroup.cpu_seconds() for cgroup in cgroups]
    return None if any(count is None for count in counts) else sum(filter(None, counts))


def measured_run(
    cgroups: Sequence[CpuCgroup],
    images: Sequence[Path],
    endpoint: str,
    clients: int,
    timeout: float = 60.0,
    api_key: str | None = None,
) -> ServedRun:
    """Every image posted once by ``clients`` threads (sending ``api_key`` as a bearer token when
    given); CPU and memory of ``cgroups`` meanwhile."""
    before = _cpu_seconds(cgroups)

    def resident() -> int:
        return sum(rss_bytes(pid) for cgroup in cgroups for pid in cgroup.pids())

    with Sampler(resident, RSS_SAMPLE_S, "rss-sampler") as rss:
        load = run_load(images, endpoint, clients, timeout=timeout, progress=False, api_key=api_key)
    after = _cpu_seconds(cgroups)
    if load.errors or load.timeouts:
        raise RuntimeError(f"{load.errors} errors, {load.timeouts} timeouts at {endpoint}")
    cpu = None if before is None or after is None else (after - before) / len(images)
    return ServedRun(clients, len(cgroups), load, cpu, max(rss.readings, default=0))


@contextlib.contextmanager
def _models_variable(model: str | None) -> Iterator[None]:
    """``IWEBLENS_MODELS=model`` in this process's environment meanwhile (nothing for None): the
    replicas a ``LocalBackend`` starts inherit it."""
    if model is None:
        yield
        return
    name = env_name("models")
    before = os.environ.get(name)
    os.environ[name] = model
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


class EngineService:
    """One engine's replicas (``iweblens serve`` in quota cgroups) behind HAProxy.

    The replicas inherit this process's environment, IWEBLENS_API_KEYS included; ``api_key`` is
    the key the load client sends. ``model``: the one model they load (None: the environment's).
    """

    def __init__(self, engine: str, api_key: str | None = None, model: str | None = None) -> None:
        self.engine = engine
        self.api_key = api_key
        self.model = model
        self.backend = LocalBackend(cpu_limit=POD_CPUS, engine=engine)

    def _scale(self, replicas: int) -> None:
        with _models_variable(self.model):
            self.backend.scale(replicas)

    def __enter__(self) -> EngineService:
        try:
            self._scale(1)
        except BaseException:
            self.backend.close()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        self.backend.close()

    def _cgroups(self) -> list[CpuCgroup]:
        cgroups = [self.backend.cgroup_of(name) for name in self.backend.replica_names()]
        if any(cgroup is None for cgroup in cgroups):
            raise RuntimeError("a replica runs without a CPU quota; the figures would lie")
        return [cgroup for cgroup in cgroups if cgroup is not None]

    def run(self, images: Sequence[Path], clients: int) -> ServedRun:
        """One replica's run of ``images`` at ``clients`` threads."""
        return measured_run(
            self._cgroups(), images, self.backend.endpoint, clients, api_key=self.api_key
        )

    def round(self, images: Sequence[Path], clients: int, replicas: int) -> list[ServedRun]:
        """1 replica at 1 and ``clients`` threads, then ``replicas`` at ``clients``; back to 1."""
        runs = [self.run(images, threads) for threads in (1, clients)]
        self._scale(replicas)
        try:
            runs.append(self.run(images, clients))
        finally:
            self._scale(1)
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


def measure_naive(images: Sequence[Path], clients: int, model_dir: Path) -> list[ServedRun]:
    """The naive baseline (``iweblens.bench.naive``) at 1 and ``clients`` threads, same quota."""
    from iweblens.harness.serving import LOOPBACK, free_port

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
                runs.append(
                    measured_run([cgroup], images, endpoint, threads, NAIVE_REQUEST_TIMEOUT_S)
                )
        finally:
            process.terminate()
            process.wait()
    return runs
