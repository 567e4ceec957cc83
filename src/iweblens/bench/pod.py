"""One pod of the Deployment, imitated on this machine: its limits, readiness and termination.

``iweblens serve`` runs on a free loopback port inside a fresh cgroup with the CPU quota and the
memory limit of ``deploy/k8s/deployment.yaml`` (cgroup v1 or v2). The kernel then does what it does
to a pod: the quota throttles, and going over the memory limit gets a process OOM-killed. The
harness reports the peak memory and the OOM kills from the cgroup's own counters, and restarts
nothing (a dead worker stays visible as such). :meth:`Pod.terminate` behaves like the kubelet
stopping a pod (SIGTERM, then SIGKILL when the grace is over); its probes are
``iweblens.bench.kubelet``'s. The attacks of ``iweblens stress`` and the ``test_pod_*`` tests
both run on this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from iweblens.config import Settings
from iweblens.harness.cgroup import CGROUP_ROOT, PodCgroup
from iweblens.harness.manifest import PodSpec
from iweblens.harness.procfs import Sampler, held_connections, rss_bytes
from iweblens.harness.serving import (
    LOOPBACK,
    ExitedBeforeReady,
    NotReadyInTime,
    free_port,
    serve_command,
    wait_until_ready,
)

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
        try:
            wait_until_ready({self.name: self.port}, lambda _: self.alive, timeout, interval=0.2)
        except ExitedBeforeReady:
            raise PodFailed(f"{self.name} exited during start-up:\n{self.log_tail()}") from None
        except NotReadyInTime:
            raise PodFailed(
                f"{self.name} was not ready within {timeout} s:\n{self.log_tail()}"
            ) from None
        return self

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


@contextlib.contextmanager
def running_pod(spec: PodSpec, name: str) -> Iterator[Pod]:
    """A fresh pod, ready; stopped and its cgroups removed afterwards."""
    with Pod(spec, name=name) as pod:
        pod.wait_ready()
        yield pod


def connection_sampler(pod: Pod, interval: float = 1.0) -> Sampler[int]:
    """The connections ``pod`` holds, read every ``interval`` seconds (``max`` of the readings:
    the most it held at once)."""
    return Sampler(pod.held_connections, interval, "pod-sampler")
