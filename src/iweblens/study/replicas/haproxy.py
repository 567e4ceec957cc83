"""HAProxy in front of the replicas: the single-machine stand-in for a Kubernetes Service.

Why HAProxy (and not nginx): it health-checks every replica's ``/readyz`` itself, so it routes
only to ready replicas, as a Service routes only to ready pods; and its ``retry-on conn-failure
503`` re-sends a request to another replica only when the connection could not be made, or when
the replica answered 503, which the service only does for work it did not run (shed under load,
or queued when it was told to stop): a detection is never repeated. Such a retry needs the whole
request in HAProxy's buffer (``option http-buffer-request``, ``tune.bufsize`` sized for the
study's photographs); larger requests are forwarded as before, without it.

It runs in master-worker mode; a new replica set means a new config file and SIGUSR2 to the
master, which starts a worker on the new config while the old one drains.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iweblens.study.replicas import BackendError

BACKEND_NAME = "replicas"
# A saturated replica on half a core can take seconds to answer, even /readyz; the timeouts leave
# room for 32 concurrent slow requests so the balancer never cuts a run short. The stats socket
# is at operator level because lower levels hide the servers' addresses. A 512 KiB buffer holds
# the largest of the 128 reference photographs (411 KB) as a multipart upload, so a 503 of a
# stopping replica can be retried on another.
CONFIG_TEMPLATE = """\
global
    maxconn 4096
    nbthread 1
    tune.bufsize 524288
    stats socket abns@{stats_socket} level operator

defaults
    mode http
    maxconn 4096
    timeout connect 2s
    timeout client 10m
    timeout server 10m
    timeout queue 10m
    timeout http-request 60s
    timeout check 5s
    retries 3
    retry-on conn-failure 503
    option http-buffer-request
    option redispatch 1

frontend service
    bind {host}:{port}
    default_backend {backend}

backend {backend}
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 1s fastinter 250ms downinter 500ms rise 1 fall 3
{servers}"""


class BalancerError(BackendError):
    """HAProxy is missing, rejected its config or did not take the new replica set."""


@dataclass(frozen=True)
class Server:
    """One replica as the balancer sees it."""

    name: str
    host: str
    port: int


def haproxy_config(host: str, port: int, servers: Sequence[Server], stats_socket: str) -> str:
    """The whole HAProxy config for a replica set, round-robin over ``servers``.

    ``stats_socket`` names an abstract unix socket: no file to clean up, and no path-length limit
    to hit when the temporary folder is deep.
    """
    lines = "".join(f"    server {s.name} {s.host}:{s.port}\n" for s in servers)
    return CONFIG_TEMPLATE.format(
        host=host, port=port, backend=BACKEND_NAME, servers=lines, stats_socket=stats_socket
    )


def find_haproxy() -> str:
    """HAProxy's path; Debian puts it in /usr/sbin, which a non-root PATH may lack."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise BalancerError(
            "haproxy is not installed: run scripts/install-system-deps.sh (Debian package haproxy)"
        )
    return found


class Balancer:
    """One HAProxy listening on ``host:port``, reconfigured for each replica set."""

    def __init__(self, host: str, port: int, workdir: Path) -> None:
        self.host = host
        self.port = port
        self._haproxy = find_haproxy()
        self._config = workdir / "haproxy.cfg"
        self._stats_socket = f"iweblens-haproxy-{os.getpid()}-{port}"
        self._log = workdir / "haproxy.log"
        self._process: subprocess.Popen[bytes] | None = None

    def configure(self, servers: Sequence[Server], timeout: float = 30.0) -> None:
        """Route to exactly ``servers`` from now on; returns once HAProxy has them all up."""
        candidate = self._config.with_suffix(".new")
        candidate.write_text(haproxy_config(self.host, self.port, servers, self._stats_socket))
        check = subprocess.run(
            [self._haproxy, "-c", "-f", str(candidate)], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise BalancerError(f"haproxy rejected its config: {check.stdout}{check.stderr}")
        candidate.replace(self._config)
        if self._process is None or self._process.poll() is not None:
            self._start()
        else:
            self._process.send_signal(signal.SIGUSR2)
        self._wait_for({server.name: f"{server.host}:{server.port}" for server in servers}, timeout)

    def stats(self) -> list[dict[str, str]]:
        """HAProxy's ``show stat`` rows for the replicas' backend (counters, states, addresses)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stats:
            stats.settimeout(5)
            # HAProxy binds abstract names zero-padded to the whole of sun_path (108 bytes).
            stats.connect(f"\0{self._stats_socket}".ljust(108, "\0"))
            stats.sendall(b"show stat\n")
            reply = b"".join(iter(lambda: stats.recv(65536), b""))
        rows = csv.DictReader(io.StringIO(reply.decode().lstrip("# ")))
        return [row for row in rows if row.get("pxname") == BACKEND_NAME]

    def server_states(self) -> dict[str, tuple[str, str]]:
        """Each replica's address and state (``UP``, ``DOWN``, ...) as HAProxy sees them."""
        return {
            row["svname"]: (row["addr"], row["status"])
            for row in self.stats()
            if row["svname"] != "BACKEND"
        }

    def close(self) -> None:
        """Stop HAProxy (the master takes its workers with it)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None

    def _start(self) -> None:
        with self._log.open("ab") as log:
            self._process = subprocess.Popen(
                [self._haproxy, "-W", "-db", "-f", str(self._config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_for(self, addresses: dict[str, str], timeout: float) -> None:
        """Until the worker on the new config answers with every replica up.

        Addresses are compared as well as names: right after a reload the old worker may still
        answer, and a replica restarted under its old name has a new port.
        """
        wanted = {name: (address, "UP") for name, address in addresses.items()}
        deadline = time.monotonic() + timeout
        states = None
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BalancerError(f"haproxy exited: {self._log_tail()}")
            try:
                states = self.server_states()
            except OSError:
                states = None
            if states == wanted:
                return
            time.sleep(0.1)
        raise BalancerError(f"haproxy did not bring up {wanted}; it reports {states}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
