"""What ``/proc`` says of a server's processes: memory, descriptors, threads, connections.

One reader of ``/proc/PID/status`` and ``/proc/PID/fd`` (:func:`status_fields`, :func:`rss_bytes`,
:func:`open_fds`), one of the kernel's TCP tables (:func:`held_connections`), and one
:class:`Sampler` that takes any such reading every few seconds while a run goes on (a
:class:`Background` thread, as the bench's connection floods are).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Self, TypeVar

T = TypeVar("T")

# /proc/net/tcp states (include/net/tcp_states.h): 0A is LISTEN; every other state of a socket on
# the server's port is an accepted connection (ESTABLISHED, or CLOSE_WAIT once the client left).
_TCP_LISTEN = "0A"


def status_fields(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as ``{"VmRSS": "1234 kB", "Threads": "7", ...}``.

    Raises ``OSError`` (``FileNotFoundError``) once the process is gone.
    """
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def rss_bytes(pid: int) -> int:
    """Resident set size of one process in bytes (0 once it is gone)."""
    try:
        return int(status_fields(pid)["VmRSS"].split()[0]) * 1024
    except (OSError, KeyError):
        return 0


def open_fds(pid: int) -> list[str]:
    """The process's open file descriptors (numbers, as ``/proc/PID/fd`` names them).

    Raises ``OSError`` once the process is gone.
    """
    return os.listdir(f"/proc/{pid}/fd")


def _socket_inodes(pids: list[int]) -> set[int]:
    inodes = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in open_fds(pid):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(int(target[8:-1]))
    return inodes


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


class Sampler(Background, Generic[T]):
    """``read()`` every ``interval`` seconds on a daemon thread during a ``with`` block.

    The first reading is taken at once; a reading that raises ``OSError`` (the process went
    away) is skipped. ``readings`` holds the others, in order.
    """

    def __init__(self, read: Callable[[], T], interval: float, name: str = "sampler") -> None:
        self._read = read
        self._interval = interval
        self.readings: list[T] = []
        super().__init__(name)

    def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.readings.append(self._read())
            if self._stop.wait(self._interval):
                return
