"""Replicas on loopback ports behind HAProxy: what ``local`` and ``docker`` have in common.

Subclasses say only how one replica is started, stopped, killed and checked for life; scaling,
readiness and the balancer are handled once here.
"""

from __future__ import annotations

import shutil
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from iweblens.harness.serving import (
    LOOPBACK,
    ExitedBeforeReady,
    NotReadyInTime,
    free_port,
    replica_is_ready,
    wait_until_ready,
)
from iweblens.study.replicas import BackendError
from iweblens.study.replicas.haproxy import Balancer, Server

API_PATH = "/api/object_detection"


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
        by_name = {replica.name: replica for replica in replicas}
        try:
            wait_until_ready(
                {replica.name: replica.port for replica in replicas},
                lambda name: self._alive(by_name[name]),
                self.ready_timeout,
            )
        except ExitedBeforeReady as error:
            replica = by_name[error.name]
            raise BackendError(f"{error}:\n{self._logs(replica)}") from None
        except NotReadyInTime as error:
            raise BackendError(str(error)) from None

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
