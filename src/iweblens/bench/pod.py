"""One pod of the Deployment, imitated on this machine: limits, kubelet probes, termination.

``iweblens serve`` runs on a free loopback port inside a fresh cgroup with the CPU quota and the
memory limit of ``deploy/k8s/deployment.yaml`` (cgroup v1 or v2). The kernel then does what it does
to a pod: the quota throttles, and going over the memory limit gets a process OOM-killed. The
harness reports the peak memory and the OOM kills from the cgroup's own counters, and restarts
nothing (a dead worker stays visible as such). A :class:`Prober` behaves like the kubelet with the
manifest's probe settings, and :meth:`Pod.terminate` like the kubelet stopping a pod (SIGTERM, then
SIGKILL when the grace is over). The attacks of ``iweblens stress`` and the ``test_pod_*`` tests
both run on this.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from iweblens.config import Settings
from iweblens.study.replicas.balanced import LOOPBACK, free_port, replica_is_ready
from iweblens.study.replicas.cgroup import CGROUP_ROOT, PodCgroup
from iweblens.study.replicas.local import serve_command
from iweblens.study.replicas.manifest import PodSpec, ProbeSpec

MIB = 1024 * 1024
READY_TIMEOUT_S = 180.0


class PodFailed(RuntimeError):
    """The pod's server exited or never became ready."""


@dataclass(frozen=True)
class Termination:
    """How a pod stopped: exit code, seconds from SIGTERM to exit, whether the grace ran out."""

    exit_code: int
    seconds: float
    killed: bool


class Pod:
    """``iweblens serve`` held to a pod's limits; use as a context manager (always cleaned up).

    The server gets this process's environment, then the manifest's ``env`` (``spec.env``). Raises
    ``CgroupUnavailable`` from :meth:`start` when the machine lets us write no CPU and memory
    cgroup (the tests skip then).
    """

    def __init__(
        self,
        spec: PodSpec,
        *,
        name: str = "pod",
        cgroup_root: Path = CGROUP_ROOT,
    ) -> None:
        self.spec = spec
        self.name = name
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self._env = {**os.environ, **Settings.to_env(served_by=name), **spec.env}
        self._cgroup_root = cgroup_root
        self.cgroup: PodCgroup | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.gettempdir()) / f"iweblens-{name}-{self.port}.log"

    def __enter__(self) -> Pod:
        return self.start()

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _error: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> Pod:
        """Create the cgroups and start the server inside them (not waiting for it)."""
        cgroup_name = f"iweblens-{os.getpid()}-{self.name}-{self.port}"
        self.cgroup = PodCgroup.create(
            cgroup_name, self.spec.cpu_cores, self.spec.memory_bytes, self._cgroup_root
        )
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.cgroup.command(serve_command(self.port)),
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Pod:
        """Block until ``/readyz`` answers 200; ``PodFailed`` if the server exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise PodFailed(f"{self.name} exited during start-up:\n{self.log_tail()}")
            if replica_is_ready(LOOPBACK, self.port):
                return self
            time.sleep(0.2)
        raise PodFailed(f"{self.name} was not ready within {timeout} s:\n{self.log_tail()}")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        """The server's main process (the container's PID 1 in a real pod)."""
        assert self.process is not None, "start() the pod first"
        return self.process.pid

    def _cgroup(self) -> PodCgroup:
        assert self.cgroup is not None, "start() the pod first"
        return self.cgroup

    def peak_memory_bytes(self) -> int | None:
        """The most memory the pod was ever charged (the cgroup's high-water mark)."""
        return self._cgroup().memory.peak_bytes()

    def oom_kills(self) -> int:
        return self._cgroup().memory.oom_kills()

    def pids(self) -> list[int]:
        return self._cgroup().pids()

    def largest_process(self) -> int | None:
        """The pid with the most resident memory: the one holding the networks."""
        sizes = {pid: rss_bytes(pid) for pid in self.pids()}
        return max(sizes, key=lambda pid: sizes[pid]) if sizes else None

    def held_connections(self) -> int:
        """Client connections the server's processes have accepted and not closed yet."""
        return held_connections(self.pids(), self.port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def terminate(self, grace_s: float | None = None) -> Termination:
        """Stop the pod as the kubelet does: SIGTERM, then SIGKILL once ``grace_s`` is over.

        ``grace_s`` defaults to the manifest's grace left after its preStop sleep.
        """
        assert self.process is not None, "start() the pod first"
        grace = self.spec.stop_grace_s if grace_s is None else grace_s
        signalled = time.monotonic()
        killed = False
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return Termination(self.process.returncode, time.monotonic() - signalled, killed)

    def close(self) -> None:
        """Stop the server if it still runs, kill anything left, remove the cgroups."""
        if self.process is not None:
            if self.process.poll() is None:
                self.terminate()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None


def rss_bytes(pid: int) -> int:
    """Resident set size of one process (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _socket_inodes(pids: list[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(int(target[8:-1]))
    return inodes


# /proc/net/tcp states (include/net/tcp_states.h): 0A is LISTEN; every other state of a socket on
# the server's port is an accepted connection (ESTABLISHED, or CLOSE_WAIT once the client left).
_TCP_LISTEN = "0A"


def held_connections(pids: list[int], port: int) -> int:
    """Accepted TCP connections on ``port`` that one of ``pids`` holds open.

    Connections still in the kernel's accept backlog belong to no process and are not counted:
    this is what "the server has accepted" means from outside it.
    """
    inodes = _socket_inodes(pids)
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] != _TCP_LISTEN and int(fields[9]) in inodes:
                    count += 1
    return count


# ----------------------------------------------------------------------------- the kubelet


@dataclass(frozen=True)
class ProbeResult:
    """One probe: when it started (monotonic), how long it took, its status (None: no answer)."""

    at: float
    seconds: float
    status: int | None

    @property
    def ok(self) -> bool:
        # The kubelet counts 200-399 as success; a timeout or a refused connection fails.
        return self.status is not None and 200 <= self.status < 400


@dataclass
class ProbeRecord:
    """Every result of one probe, and what the kubelet would have done about them."""

    kind: str
    spec: ProbeSpec
    results: list[ProbeResult] = field(default_factory=list)
    # Each run of ``failure_threshold`` consecutive failures: a restart for liveness, removal from
    # the Service's endpoints for readiness.
    would_act: int = 0
    _consecutive: int = 0

    def add(self, result: ProbeResult) -> None:
        self.results.append(result)
        if result.ok:
            self._consecutive = 0
            return
        self._consecutive += 1
        if self._consecutive == self.spec.failure_threshold:
            self.would_act += 1
            self._consecutive = 0  # the kubelet starts counting again after it acts

    @property
    def failures(self) -> int:
        return sum(not r.ok for r in self.results)

    def quantile(self, q: float) -> float:
        """Latency quantile in seconds (nearest rank; a failed probe counts with its duration)."""
        times = sorted(r.seconds for r in self.results)
        return times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")

    def summary(self) -> str:
        if not self.results:
            return f"{self.kind}: no probes"
        median = statistics.median(r.seconds for r in self.results)
        act = "restarts" if self.kind == "liveness" else "unready"
        return (
            f"{self.kind} {self.spec.path}: {len(self.results)} probes, {self.failures} failed, "
            f"p50 {median * 1000:.0f} ms, p99 {self.quantile(0.99) * 1000:.0f} ms, "
            f"would-{act} {self.would_act}"
        )


def probe_once(port: int, spec: ProbeSpec) -> ProbeResult:
    """One kubelet HTTP probe: a new connection, GET, at most ``timeout_s`` for all of it."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=spec.timeout_s)
    status = None
    try:
        connection.request("GET", spec.path, headers={"Connection": "close"})
        if connection.sock is not None:
            connection.sock.settimeout(max(0.001, started + spec.timeout_s - time.monotonic()))
        response = connection.getresponse()
        response.read()
        status = response.status
    except (OSError, http.client.HTTPException):
        pass
    finally:
        connection.close()
    return ProbeResult(started, time.monotonic() - started, status)


class Prober:
    """The kubelet's probes of one pod, each on its own thread every ``period_s``.

    Started on a pod that is already ready, so ``initialDelaySeconds`` has passed.
    """

    def __init__(self, port: int, probes: Mapping[str, ProbeSpec]) -> None:
        self._port = port
        self.records = {kind: ProbeRecord(kind, spec) for kind, spec in probes.items()}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(record,), name=f"probe-{kind}", daemon=True)
            for kind, record in self.records.items()
        ]

    def __enter__(self) -> Prober:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, record: ProbeRecord) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            record.add(probe_once(self._port, record.spec))
            next_at += record.spec.period_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    @property
    def failures(self) -> int:
        return sum(record.failures for record in self.records.values())

    def quantile(self, q: float) -> float:
        """Latency quantile over every probe of every kind."""
        merged = ProbeRecord("all", ProbeSpec("*"))
        for record in self.records.values():
            merged.results.extend(record.results)
        return merged.quantile(q)

    def summary(self) -> list[str]:
        return [record.summary() for record in self.records.values()]


class Background:
    """``_run`` on a daemon thread during a ``with`` block, returning once ``_stop`` is set."""

    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        raise NotImplementedError


class PodSampler(Background):
    """The most connections the pod held at once, sampled every ``interval`` seconds."""

    def __init__(self, pod: Pod, interval: float = 1.0) -> None:
        self._pod = pod
        self._interval = interval
        self.max_connections = 0
        super().__init__("pod-sampler")

    def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.max_connections = max(self.max_connections, self._pod.held_connections())
            if self._stop.wait(self._interval):
                return
