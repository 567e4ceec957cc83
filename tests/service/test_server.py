"""The HTTP edge's own hooks (``service/server.py``), raw sockets and ``http.client`` on loopback
against real ``iweblens serve`` processes: pipelining, Upgrade, lingering close after an early
refusal, the connection cap, and memory reserved as a body arrives.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from support import ServerProcess, serving

from iweblens.bench.kubelet import probe_once
from iweblens.harness.manifest import ProbeSpec
from iweblens.models.store import ModelPaths
from iweblens.service.server import LINGERING_TIMEOUT_S

DETECT = "/api/object_detection"
MIB = 1 << 20
MAX_CONNECTIONS = 50
MEMORY_BUDGET = 40 * MIB  # one 16 MiB raw body's reservation (32 MiB) fits, not two
PIPELINE_READ_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def edge(model_paths: ModelPaths) -> Iterator[ServerProcess]:
    """Few connections and a small memory budget, the default body limit and read timeout."""
    env = {
        "IWEBLENS_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "IWEBLENS_MEMORY_BUDGET": str(MEMORY_BUDGET),
    }
    with serving(env, served_by="edge") as server:
        yield server


def read_answers(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` answers (status, body) read off one connection, by their Content-Length."""
    buffer = b""
    answers = []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(answers)} answers: {buffer[:300]!r}"
            buffer += chunk
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = int(fields[b"content-length"])
        while len(buffer) < length:
            chunk = sock.recv(65536)
            assert chunk, "closed inside an answer"
            buffer += chunk
        answers.append((int(lines[0].split()[1]), buffer[:length]))
        buffer = buffer[length:]
    return answers


def detection_request(photo: bytes, extra: bytes = b"") -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n" % DETECT.encode()
    return head + extra + b"Content-Length: %d\r\n\r\n" % len(photo) + photo


# -- pipelining ----------------------------------------------------------------------------------


def test_pipelined_requests_are_counted_one_by_one(edge: ServerProcess) -> None:
    # 51 headers each: one request is well under the limit of 100, the two together are not.
    headers = b"".join(b"X-Field-%d: value\r\n" % index for index in range(50))
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n"
    with socket.create_connection(("127.0.0.1", edge.port), timeout=30) as sock:
        sock.sendall(request + request)
        answers = read_answers(sock, 2)
    assert [status for status, _ in answers] == [200, 200]


def test_a_pipelined_request_that_arrived_whole_is_not_timed_out(
    model_paths: ModelPaths, photos: list[Path]
) -> None:
    """The second request arrives with the first; the first waits in a queue longer than the read
    timeout. The second was read in time: it is served, not 408."""
    photo = photos[0].read_bytes()
    env = {"IWEBLENS_READ_TIMEOUT": str(PIPELINE_READ_TIMEOUT_S), "IWEBLENS_INFERENCE_WORKERS": "1"}
    with serving(env, served_by="edge") as server, ThreadPoolExecutor(24) as pool:
        url = f"{server.url}{DETECT}"
        queue = [
            pool.submit(requests.post, url, files={"image": photo}, timeout=120) for _ in range(24)
        ]
        with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
            started = time.monotonic()
            sock.sendall(detection_request(photo) + detection_request(photo))
            answers = read_answers(sock, 2)
            waited = time.monotonic() - started
        assert all(future.result().status_code == 200 for future in queue)
    print(f"\ntwo pipelined detections behind a queue: answered after {waited:.1f} s")
    assert [status for status, _ in answers] == [200, 200]
    assert answers[0][1] == answers[1][1]


# -- Upgrade -------------------------------------------------------------------------------------


@pytest.mark.parametrize("upgrade", [b"h2c", b"TLS/1.2", b"websocket"])
def test_an_upgrade_request_is_served_as_http_1_1(
    edge: ServerProcess, photos: list[Path], upgrade: bytes
) -> None:
    photo = photos[0].read_bytes()
    offer = (
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: " + upgrade + b"\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
    )
    plain = requests.post(
        f"{edge.url}{DETECT}", data=photo, headers={"Content-Type": "image/jpeg"}, timeout=60
    )
    with socket.create_connection(("127.0.0.1", edge.port), timeout=60) as sock:
        # The same connection then carries an ordinary request: it stayed HTTP/1.1.
        sock.sendall(detection_request(photo, offer) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = read_answers(sock, 2)
    assert plain.status_code == 200
    assert answers[0] == (200, plain.content)
    assert answers[1][0] == 200


def test_connect_is_refused_400(edge: ServerProcess) -> None:
    # httptools treats every CONNECT as an upgrade: it is refused, not parsed again and again.
    with socket.create_connection(("127.0.0.1", edge.port), timeout=30) as sock:
        sock.sendall(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        assert read_answers(sock, 1)[0][0] == 400
    assert requests.get(f"{edge.url}/healthz", timeout=10).status_code == 200


# -- lingering close -----------------------------------------------------------------------------


def http_client_post(port: int, body: bytes, content_type: str) -> http.client.HTTPResponse:
    """POST as ``http.client`` does: the whole body is sent before the answer is read."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.request("POST", DETECT, body=body, headers={"Content-Type": content_type})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def test_a_body_over_the_limit_is_refused_413_and_the_client_reads_it(
    edge: ServerProcess,
) -> None:
    # Declared over the 16 MiB limit: refused from the headers, then read and discarded.
    response = http_client_post(edge.port, bytes(17 * MIB), "image/jpeg")
    assert response.status == 413
    assert response.getheader("Connection") == "close"


def test_lingering_is_bounded_in_bytes_and_in_time(edge: ServerProcess) -> None:
    # Past twice the body limit the rest is not read: the client is reset.
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        http_client_post(edge.port, bytes(3 * 16 * MIB), "image/jpeg")
    # After its 413 the rest is read and discarded while it keeps coming; a pause longer than
    # LINGERING_TIMEOUT_S ends it (the next bytes are answered with a reset).
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n" % DETECT.encode()
    with socket.create_connection(("127.0.0.1", edge.port), timeout=60) as sock:
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % (17 * MIB) + bytes(4096))
        assert read_answers(sock, 1)[0][0] == 413
        assert sock.recv(1) == b""  # end of stream: the write side was shut after the answer
        for pause in (1.0, 1.0):
            time.sleep(pause)
            sock.sendall(bytes(4096))  # still lingering: read and discarded, no reset
        time.sleep(LINGERING_TIMEOUT_S + 1)
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(50):
                sock.sendall(bytes(4096))
                time.sleep(0.1)


def test_a_body_over_the_memory_budget_is_refused_503_and_the_client_reads_it(
    edge: ServerProcess,
) -> None:
    # A 15 MiB multipart upload reserves 45 MiB as it arrives: over the 40 MiB budget midway.
    boundary = "edgeboundary"
    part = 'Content-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
    body = f"--{boundary}\r\n{part}".encode() + bytes(15 * MIB) + f"\r\n--{boundary}--\r\n".encode()
    response = http_client_post(edge.port, body, f"multipart/form-data; boundary={boundary}")
    assert response.status == 503
    assert int(response.getheader("Retry-After", "0")) >= 1
    assert requests.get(f"{edge.url}/healthz", timeout=10).status_code == 200


# -- connections and memory held by incomplete requests ------------------------------------------


@contextlib.contextmanager
def open_connections(port: int, count: int, payload: bytes) -> Iterator[list[socket.socket]]:
    """``count`` connections that each sent ``payload`` and then nothing; closed afterwards."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(payload)
            sockets.append(sock)
        time.sleep(0.5)  # the server has read what they sent
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_probes_and_requests_get_through_when_every_connection_sent_one_byte(
    edge: ServerProcess, photos: list[Path]
) -> None:
    probe = ProbeSpec("/healthz", timeout_s=2)
    with open_connections(edge.port, MAX_CONNECTIONS + 10, b"P") as flood:
        probes = [probe_once(edge.port, probe) for _ in range(20)]
        with photos[0].open("rb") as handle:
            detection = requests.post(f"{edge.url}{DETECT}", files={"image": handle}, timeout=60)
        # The slowest incomplete requests made room: some of the flood was closed.
        closed = sum(1 for sock in flood if _closed(sock))
    assert [result.status for result in probes] == [200] * len(probes)
    assert detection.status_code == 200
    assert closed >= 10


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_bodies_declared_but_not_sent_hold_no_memory(
    edge: ServerProcess, photos: list[Path]
) -> None:
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n" % DETECT.encode()
    declared = head + b"Content-Length: %d\r\n\r\n" % (16 * MIB)
    with open_connections(edge.port, 3, declared), photos[0].open("rb") as handle:
        response = requests.post(f"{edge.url}{DETECT}", files={"image": handle}, timeout=60)
    assert response.status_code == 200, response.text
    assert "objects" in json.loads(response.text)
