"""What the bench sends a server over HTTP by hand, and what it reads back.

:class:`Body` is a request body built once and sent by many clients (:func:`multipart_body` as
the reference client sends it, :func:`raw_body`, :func:`json_body`); :func:`exchange` sends one on
a new connection with its own deadline, watching for an early answer, and tells how it ended as
an ``iweblens.bench.soak.Outcome``; :func:`read_metrics` reads a server's ``/metrics``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import selectors
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from iweblens.bench.soak import LOST, REFUSED, Outcome
from iweblens.harness.serving import LOOPBACK

GAVE_UP = "gave up"  # the client's own deadline passed first (it closed the connection)


DETECTION_PATH = "/api/object_detection"


SEND_CHUNK = 256 * 1024


@dataclass(frozen=True)
class Body:
    """A request body and its content type, built once and sent by many clients."""

    content_type: str
    data: bytes
    flavour: str


def multipart_body(
    image: bytes, filename: str = "image.jpg", fields: Mapping[str, str] | None = None
) -> Body:
    """One file part named ``image``, as the reference client sends, after any text ``fields``."""
    boundary = "iweblensstressboundary"
    texts = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in (fields or {}).items()
    )
    head = (
        f"{texts}--{boundary}\r\n"
        f'Content-Disposition: form-data; name="image"; filename="{filename}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    data = head + image + f"\r\n--{boundary}--\r\n".encode()
    return Body(f"multipart/form-data; boundary={boundary}", data, "multipart")


def raw_body(image: bytes) -> Body:
    return Body("image/jpeg", image, "raw")


def json_body(image: bytes, double: bool = False) -> Body:
    """``{"image": base64}``; ``double``: that document encoded again as a JSON string."""
    document = json.dumps({"id": "stress", "image": base64.b64encode(image).decode("ascii")})
    if double:
        return Body("application/json", json.dumps(document).encode(), "json-double")
    return Body("application/json", document.encode(), "json")


FLAVOURS: dict[str, Callable[[bytes], Body]] = {
    "multipart": multipart_body,
    "raw": raw_body,
    "json": json_body,
    "json-double": lambda image: json_body(image, double=True),
}


def exchange(
    port: int,
    body: Body,
    timeout: float,
    on_sent: Callable[[], None] | None = None,
    *,
    path: str = DETECTION_PATH,
) -> Outcome:
    """POST ``body`` to ``path`` on a new connection and read the status, within ``timeout`` s.

    The body is sent in chunks while watching for an early answer (a server may refuse a large
    body before reading it), as curl does; an answer read after the server reset the connection
    still counts as answered. A client whose deadline passes closes the connection: it has left.
    """
    started = time.monotonic()
    deadline = started + timeout

    def outcome(status: int | None, failure: str | None) -> Outcome:
        return Outcome(started, time.monotonic(), status, None, failure)

    try:
        sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    except ConnectionRefusedError:
        return outcome(None, REFUSED)
    except TimeoutError:
        return outcome(None, GAVE_UP)
    except OSError:
        return outcome(None, REFUSED)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
        f"Content-Type: {body.content_type}\r\nContent-Length: {len(body.data)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with sock:
        try:
            _send_watching(sock, memoryview(head + body.data), deadline)
        except TimeoutError:
            return outcome(None, GAVE_UP)
        except OSError:
            pass  # the server may have answered and closed early: read what it sent
        if on_sent is not None:
            on_sent()
        try:
            status = _read_status(sock, deadline)
        except TimeoutError:
            return outcome(None, GAVE_UP)
    return outcome(status, None if status is not None else LOST)


def _send_watching(sock: socket.socket, data: memoryview, deadline: float) -> None:
    sock.setblocking(False)
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        sent = 0
        while sent < len(data):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            for _key, events in selector.select(remaining):
                if events & selectors.EVENT_READ:
                    return  # an early answer (or the server closed): stop sending
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(data[sent : sent + SEND_CHUNK])


def _read_status(sock: socket.socket, deadline: float) -> int | None:
    """The status of the answer, after reading it whole (None: closed without an answer)."""
    received = b""
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    except ConnectionError:
        pass  # reset after (or instead of) the answer
    parts = received.split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1].isdigit():
        return int(parts[1])
    return None


def photo_body(images: Sequence[Path], index: int) -> Body:
    image = images[index % len(images)]
    return multipart_body(image.read_bytes(), image.name)


def read_metrics(url: str, timeout: float = 5.0) -> dict[str, float]:
    """The pod's ``/metrics`` as ``{'name{label="value"}': value}`` ({} without an answer)."""
    import requests

    try:
        text = requests.get(f"{url}/metrics", timeout=timeout).text
    except requests.RequestException:
        return {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
