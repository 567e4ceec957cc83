"""``iweblens serve`` as the harness runs it: the command, free loopback ports, readiness.

Every process the kits start (a study's replica, an imitated pod, a served benchmark's replica)
runs :func:`serve_command` on a :func:`free_port` of :data:`LOOPBACK`, and counts as started once
its own ``/readyz`` answers 200 (:func:`wait_until_ready`).
"""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Mapping

import requests

LOOPBACK = "127.0.0.1"
READY_PROBE_TIMEOUT_S = 5.0


class ExitedBeforeReady(RuntimeError):
    """A server exited before its ``/readyz`` answered 200; ``name`` says which."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} exited before it was ready")
        self.name = name


class NotReadyInTime(RuntimeError):
    """Servers still not ready when the wait ran out; ``names`` says which."""

    def __init__(self, names: list[str], timeout: float) -> None:
        super().__init__(f"not ready after {timeout:.0f} s: {', '.join(names)}")
        self.names = names


def free_port(host: str = LOOPBACK) -> int:
    """A port nothing listens on right now, chosen by the kernel."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def serve_command(port: int) -> list[str]:
    """``iweblens serve`` on a loopback port, run by this interpreter (no PATH lookup)."""
    return [sys.executable, "-m", "iweblens.cli", "serve", "--host", LOOPBACK, "--port", str(port)]


def replica_is_ready(host: str, port: int) -> bool:
    """Whether the replica's own ``/readyz`` answers 200 (model loaded and warm)."""
    try:
        response = requests.get(f"http://{host}:{port}/readyz", timeout=READY_PROBE_TIMEOUT_S)
    except requests.RequestException:
        return False
    return response.status_code == 200


def wait_until_ready(
    ports: Mapping[str, int],
    alive: Callable[[str], bool],
    timeout: float,
    interval: float = 0.25,
) -> None:
    """Block until every server of ``ports`` (name -> loopback port) answers ``/readyz`` 200.

    ``alive(name)`` tells whether that server still runs. Raises :class:`ExitedBeforeReady` for
    the first one found exited, :class:`NotReadyInTime` once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    waiting = dict(ports)
    while waiting:
        for name, port in list(waiting.items()):
            if not alive(name):
                raise ExitedBeforeReady(name)
            if replica_is_ready(LOOPBACK, port):
                del waiting[name]
        if waiting and time.monotonic() > deadline:
            raise NotReadyInTime(list(waiting), timeout)
        if waiting:
            time.sleep(interval)
