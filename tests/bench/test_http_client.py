"""The bench's hand-made requests: bodies the service's own parser reads, and how an exchange
ends against real loopback servers that answer early, never, or hang up."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from collections.abc import Callable

from werkzeug.wrappers import Request

from iweblens.bench.http_client import (
    FLAVOURS,
    GAVE_UP,
    exchange,
    json_body,
    multipart_body,
)
from iweblens.bench.soak import LOST, REFUSED
from iweblens.harness.serving import LOOPBACK, free_port

IMAGE = bytes(range(256)) * 64

Behaviour = Callable[[socket.socket], None]


def read_head(connection: socket.socket) -> bytes:
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    return received


def test_a_multipart_body_is_one_image_part_after_its_fields() -> None:
    body = multipart_body(IMAGE, "cat.jpg", fields={"api_key": "k"})
    request = Request.from_values(
        input_stream=io.BytesIO(body.data),
        content_type=body.content_type,
        content_length=len(body.data),
        method="POST",
    )
    assert list(request.files) == ["image"]
    assert request.files["image"].filename == "cat.jpg"
    assert request.files["image"].read() == IMAGE
    assert request.form.to_dict() == {"api_key": "k"}


def test_json_bodies_carry_the_image_in_base64_once_or_twice_encoded() -> None:
    single = json.loads(json_body(IMAGE).data)
    double = json.loads(json.loads(json_body(IMAGE, double=True).data))
    assert base64.b64decode(single["image"]) == base64.b64decode(double["image"]) == IMAGE
    assert {flavour: FLAVOURS[flavour](IMAGE).flavour for flavour in FLAVOURS} == {
        "multipart": "multipart",
        "raw": "raw",
        "json": "json",
        "json-double": "json-double",
    }


def test_an_answer_sent_before_the_body_is_read_counts() -> None:
    def refuse_early(connection: socket.socket) -> None:
        read_head(connection)
        connection.sendall(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 0\r\n\r\n")
        connection.shutdown(socket.SHUT_WR)

    outcome = exchange(_server_port(refuse_early), FLAVOURS["raw"](bytes(64 * 2**20)), timeout=30)
    assert (outcome.status, outcome.failure) == (413, None)


def test_a_server_that_never_answers_is_left_at_the_deadline() -> None:
    def silent(connection: socket.socket) -> None:
        while connection.recv(65536):
            pass

    outcome = exchange(_server_port(silent), multipart_body(IMAGE), timeout=0.5)
    assert (outcome.status, outcome.failure) == (None, GAVE_UP)
    assert outcome.ended - outcome.started < 10


def test_a_hang_up_without_an_answer_is_lost_and_no_listener_is_refused() -> None:
    def hang_up(connection: socket.socket) -> None:
        read_head(connection)

    lost = exchange(_server_port(hang_up), multipart_body(IMAGE), timeout=30)
    refused = exchange(free_port(), multipart_body(IMAGE), timeout=30)
    assert (lost.status, lost.failure) == (None, LOST)
    assert (refused.status, refused.failure) == (None, REFUSED)


def _server_port(behaviour: Behaviour) -> int:
    """A one-connection loopback server on a daemon thread (it ends with its connection)."""
    listener = socket.create_server((LOOPBACK, 0))

    def serve() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                behaviour(connection)

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])
