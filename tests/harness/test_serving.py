"""The serve command, free ports and the one readiness poll, against real loopback servers."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from iweblens.harness.serving import (
    LOOPBACK,
    ExitedBeforeReady,
    NotReadyInTime,
    free_port,
    replica_is_ready,
    serve_command,
    wait_until_ready,
)


class ReadyzServer(ThreadingHTTPServer):
    """Answers ``/readyz`` with ``statuses`` in turn (the last one from then on)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.asked = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                status = server.statuses[min(server.asked, len(server.statuses) - 1)]
                server.asked += 1
                self.send_response(status if self.path == "/readyz" else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

        super().__init__((LOOPBACK, 0), Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture
def readyz() -> Iterator[ReadyzServer]:
    server = ReadyzServer([503, 503, 200])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_free_port_can_be_bound_on_loopback() -> None:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, free_port()))


def test_the_wait_returns_once_readyz_answers_200(readyz: ReadyzServer) -> None:
    assert not replica_is_ready(LOOPBACK, readyz.port)  # the first 503
    wait_until_ready({"replica-1": readyz.port}, lambda _: True, timeout=30, interval=0.01)
    assert readyz.asked == 3
    assert replica_is_ready(LOOPBACK, readyz.port)


def test_a_server_that_exits_before_it_is_ready_is_named() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    with pytest.raises(ExitedBeforeReady) as raised:
        wait_until_ready({"gone": free_port()}, lambda _: process.poll() is None, timeout=30)
    assert raised.value.name == "gone"
    assert "gone exited before it was ready" in str(raised.value)


def test_servers_still_unready_at_the_timeout_are_named(readyz: ReadyzServer) -> None:
    readyz.statuses = [503]
    ports = {"silent": free_port(), "unready": readyz.port}
    with pytest.raises(NotReadyInTime) as raised:
        wait_until_ready(ports, lambda _: True, timeout=0.3, interval=0.05)
    assert raised.value.names == ["silent", "unready"]
    assert str(raised.value) == "not ready after 0 s: silent, unready"


def test_the_serve_command_is_this_interpreters_iweblens_on_loopback() -> None:
    port = free_port()
    command = serve_command(port)
    assert command[0] == sys.executable
    assert command[command.index("--host") + 1] == LOOPBACK
    assert command[command.index("--port") + 1] == str(port)
    usage = subprocess.run(
        [*command, "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert "--port" in usage
