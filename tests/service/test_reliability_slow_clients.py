"""Slow and idle clients must not stop normal requests (slowloris, trickled bodies, silence).

A thread-per-connection server lets a client that sends part of a request and stalls hold a
request thread; this server reads requests in its event loop, and ``iweblens.service.server``
gives each request ``IWEBLENS_READ_TIMEOUT`` seconds to arrive. These tests hold 20 hostile
connections open while normal requests are served, and check that the server drops the hostile
ones by itself.
"""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support import ServerProcess

SLOW_CLIENTS = 20
NORMAL_REQUESTS = 12
TRICKLE_INTERVAL_S = 0.1
READ_TIMEOUT_S = 4
# Generous bounds for the server to drop a connection on its own: never reached when it works.
DROP_WAIT_S = 60


def multipart_request(host: str, image: Path) -> bytes:
    """A complete, valid multipart request as the reference client sends it."""
    boundary = "slowclientboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{image.name}"'
            "\r\n\r\n"
        ).encode()
        + image.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /api/object_detection HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


class SlowClient:
    """One hostile connection: trickles a request one byte at a time, or says nothing at all."""

    def __init__(self, port: int, payload: bytes | None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.payload = payload
        self.sent = 0
        self.stop = threading.Event()
        self.dropped = threading.Event()  # the server closed, reset or answered
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                if self.payload is not None and self.sent < len(self.payload):
                    self.sock.sendall(self.payload[self.sent : self.sent + 1])
                    self.sent += 1
                if self._server_spoke():
                    self.dropped.set()
                    return
                self.stop.wait(TRICKLE_INTERVAL_S)
        except OSError:
            self.dropped.set()

    def _server_spoke(self) -> bool:
        """True once the server sent anything or closed (peek, without blocking)."""
        try:
            self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def timed_detection(url: str, image: Path) -> float:
    started = time.perf_counter()
    with image.open("rb") as handle:
        response = requests.post(f"{url}/api/object_detection", files={"image": handle}, timeout=60)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


@pytest.fixture(scope="module")
def server(model_paths: object) -> Iterator[ServerProcess]:
    process = ServerProcess(env={"IWEBLENS_READ_TIMEOUT": str(READ_TIMEOUT_S)}, served_by="slow")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_normal_requests_are_served_while_20_clients_stall(
    live_server: str, photos: list[Path]
) -> None:
    """On the default settings (a 30 s read timeout: the tricklers are never cut off here)."""
    image = photos[0]
    port = int(live_server.rsplit(":", 1)[1])
    baseline = [timed_detection(live_server, image) for _ in range(NORMAL_REQUESTS)]
    request = multipart_request(f"127.0.0.1:{port}", image)
    # Half trickle a real request byte by byte, half connect and send nothing.
    slow = [SlowClient(port, request if index % 2 == 0 else None) for index in range(SLOW_CLIENTS)]
    try:
        time.sleep(1)  # every slow client connected and (for half of them) trickling
        under_attack = [timed_detection(live_server, image) for _ in range(NORMAL_REQUESTS)]
        still_stalling = [client for client in slow if not client.dropped.is_set()]
        trickled = [client.sent for client in slow if client.payload is not None]
    finally:
        for client in slow:
            client.close()
    print(
        f"\nslow clients: {SLOW_CLIENTS} ({SLOW_CLIENTS // 2} trickling, {SLOW_CLIENTS // 2} "
        f"silent); normal requests: median {statistics.median(baseline) * 1000:.0f} ms alone, "
        f"{statistics.median(under_attack) * 1000:.0f} ms under attack "
        f"(max {max(baseline) * 1000:.0f} / {max(under_attack) * 1000:.0f} ms); "
        f"trickled {min(trickled)}-{max(trickled)} bytes each"
    )
    # Served while every trickler was still mid-request: nobody waited for a slow client.
    assert len([c for c in still_stalling if c.payload is not None]) == SLOW_CLIENTS // 2
    assert all(0 < sent < len(request) for sent in trickled)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"POST /api/object_detection HTTP/1.1\r\nHost: x\r\n", id="partial-headers"),
        pytest.param(
            b"POST /api/object_detection HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 100000\r\n\r\n\xff\xd8",
            id="partial-body",
        ),
        pytest.param(b"", id="silent"),
    ],
)
def test_the_server_drops_a_stalled_connection_by_itself(
    server: ServerProcess, payload: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=DROP_WAIT_S) as sock:
        sock.sendall(payload)
        started = time.monotonic()
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        waited = time.monotonic() - started
    print(f"\n{len(payload)} bytes, then silence: dropped after {waited:.1f} s: {answer[:12]!r}")
    # Either closed without a word, or a 4xx: never a 5xx, never kept forever.
    assert not answer or answer.startswith(b"HTTP/1.1 4")


def test_a_slow_but_steady_upload_within_the_timeout_is_served(
    server: ServerProcess, photos: list[Path]
) -> None:
    """The deadline covers the whole request, so it must not cut off an honest slow client."""
    request = multipart_request(f"127.0.0.1:{server.port}", photos[0])
    pieces = 10
    step = len(request) // pieces + 1
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        for offset in range(0, len(request), step):
            sock.sendall(request[offset : offset + step])
            time.sleep(READ_TIMEOUT_S / pieces / 2)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200")
