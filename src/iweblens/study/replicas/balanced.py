"""Replicas on loopback ports behind HAProxy: what ``local`` and ``docker`` have in common.

Subclasses say only how one replica is started, stopped, killed and checked for life; scaling,
readiness and the balancer are handled once here.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import requests

from iweblens.study.replicas import BackendError
from iweblens.study.replicas.balancer import Balancer, Server

LOOPBACK = "127.0.0.1"
API_PATH = "/api/object_detection"
READY_PROBE_TIMEOUT_S = 5.0


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now, chosen by the kernel."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def replica_is_ready(host: str, port: int) -> bool:
    """Whether the replica's own ``/readyz`` answers 200 (model loaded and warm)."""
    try:
        response = requests.get(f"http://{host}:{port}/readyz", timeout=READY_PROBE_TIMEOUT_S)
    except requests.RequestException:
        return False
    return response.status_code == 200


@dataclass
class Replica:
    """One replica listening on ``port``; ``name`` is what it puts in ``X-Served-By``."""

    name: str
    port: int


ReplicaT = TypeVar("ReplicaT", bound=Replica)


class BalancedBackend(ABC, Generic[ReplicaT]):
    """N replicas on distinct loopback ports, round-robin behind one HAProxy."""

    name = "balanced"

    def __init__(
        self, *, cpu_limit: float | None, balancer_port: int = 0, ready_timeout: float = 180.0
    ) -> None:
        self.cpu_limit = cpu_limit
        self.ready_timeout = ready_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix=f"iweblens-{self.name}-"))
        self._balancer = Balancer(LOOPBACK, balancer_port or free_port(), self.workdir)
        self._replicas: dict[str, ReplicaT] = {}

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self._balancer.port}{API_PATH}"

    def replica_names(self) -> list[str]:
        return list(self._replicas)

    def readiness(self) -> dict[str, bool]:
        return {name: replica_is_ready(LOOPBACK, r.port) for name, r in self._replicas.items()}

    def scale(self, replicas: int) -> None:
        while len(self._replicas) > replicas:
            _, replica = self._replicas.popitem()
            self._stop(replica)
        started = []
        while len(self._replicas) < replicas:
            name = self._unused_name()
            replica = self._start(name, free_port())
            self._replicas[name] = replica
            started.append(replica)
        self._wait_until_ready(started)
        servers = [Server(r.name, LOOPBACK, r.port) for r in self._replicas.values()]
        self._balancer.configure(servers)

    def kill(self, name: str) -> None:
        """Kill the replica without telling the balancer, which must notice by itself."""
        try:
            replica = self._replicas.pop(name)
        except KeyError:
            raise BackendError(f"no replica named {name!r}") from None
        self._kill(replica)

    def close(self) -> None:
        try:
            while self._replicas:
                _, replica = self._replicas.popitem()
                self._stop(replica)
        finally:
            self._balancer.close()
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _unused_name(self) -> str:
        index = 1
        while f"replica-{index}" in self._replicas:
            index += 1
        return f"replica-{index}"

    def _wait_until_ready(self, replicas: list[ReplicaT]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        waiting = list(replicas)
        while waiting:
            for replica in list(waiting):
                if not self._alive(replica):
                    raise BackendError(
                        f"{replica.name} exited before it was ready:\n{self._logs(replica)}"
                    )
                if replica_is_ready(LOOPBACK, replica.port):
                    waiting.remove(replica)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(r.name for r in waiting)
                raise BackendError(f"not ready after {self.ready_timeout:.0f} s: {names}")
            if waiting:
                time.sleep(0.25)

    @abstractmethod
    def _start(self, name: str, port: int) -> ReplicaT:
        """Start a replica serving on ``LOOPBACK:port`` that signs its responses ``name``."""

    @abstractmethod
    def _stop(self, replica: ReplicaT) -> None:
        """Stop a replica gracefully (in-flight requests finish) and wait until it is gone."""

    @abstractmethod
    def _kill(self, replica: ReplicaT) -> None:
        """Stop a replica at once, as a crash would."""

    @abstractmethod
    def _alive(self, replica: ReplicaT) -> bool:
        """Whether the replica is still running (ready or not)."""

    @abstractmethod
    def _logs(self, replica: ReplicaT) -> str:
        """The end of the replica's output, to explain a failed start."""
