"""Test helpers shared across test folders (a uniquely named module: ``conftest`` is ambiguous
once several folders have one)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import requests
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from iweblens.config import Settings
from iweblens.detection import ModelCard
from iweblens.harness.serving import free_port, serve_command
from iweblens.inference.engines import SCORE_FLOOR
from iweblens.inference.pool import InferencePool
from iweblens.service.front import Front, build_front

if TYPE_CHECKING:
    from PIL import Image

TESTS_DIR = Path(__file__).resolve().parent
REPO_DIR = TESTS_DIR.parent
IMAGES_DIR = TESTS_DIR / "images"
# CI clones the repo with shared/ beside it; the lead's checkout lives at /work/main.
COCO128_DIR = REPO_DIR.parent / "shared" / "images" / "coco128"
DEPLOYMENT_MANIFEST = REPO_DIR / "deploy" / "k8s" / "deployment.yaml"
SERVER_START_TIMEOUT_S = 180
REFERENCE_CLIENT = TESTS_DIR / "reference" / "iWebLens_client.py"
API_KEYS = ("first-key-7f3a", "second-key-91c2")  # what ``keyed_server`` requires


def run_reference_client(folder: Path, endpoint: str, threads: int) -> list[str]:
    """Run the reference client as users do; its non-empty output lines (answers, then summary)."""
    done = subprocess.run(
        [sys.executable, str(REFERENCE_CLIENT), str(folder), endpoint, str(threads)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if line.strip()]


def wait_until_ready(base_url: str, died: Callable[[], str | None], timeout: float) -> None:
    """Poll ``/readyz`` until it answers 200; ``died()`` says why the server is gone, if it is."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (reason := died()) is not None:
            raise RuntimeError(reason)
        try:
            if requests.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base_url}/readyz did not answer 200 within {timeout} s")


class ServerProcess:
    """``iweblens serve`` on a loopback port, in its own process group."""

    def __init__(self, env: dict[str, str] | None = None, served_by: str = "test-server") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"iweblens-{self.port}.log"
        full_env = {**os.environ, "IWEBLENS_SERVED_BY": served_by, **(env or {})}
        self.process = subprocess.Popen(
            serve_command(self.port),
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=self.log_path.open("wb"),
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = SERVER_START_TIMEOUT_S) -> None:
        def exited() -> str | None:
            if self.process.poll() is None:
                return None
            return f"server exited early:\n{self.log()}"

        wait_until_ready(self.url, exited, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logged(self, pattern: str, timeout: float = 5.0) -> re.Match[str] | None:
        """The first log line matching ``pattern``, waiting for it: the front writes a request's
        access line once its answer is sent, so it may follow the answer by a moment."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log(), re.M)
            if match is not None or time.monotonic() >= deadline:
                return match
            time.sleep(0.05)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM (graceful), then SIGKILL if it does not exit in time; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    """``image`` saved by Pillow as ``fmt`` with ``options``: the file's bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@contextlib.contextmanager
def serving(env: dict[str, str], served_by: str = "test-server") -> Iterator[ServerProcess]:
    """A ready ``ServerProcess`` with ``env`` for the ``with`` block, stopped after it."""
    server = ServerProcess(env=env, served_by=served_by)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def heic_header(major: bytes = b"heic", compatible: tuple[bytes, ...] = (b"mif1",)) -> bytes:
    """The start of an iPhone photo: an ISO base media ftyp box naming a HEIF brand."""
    body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
    box = struct.pack(">I", 8 + len(body)) + b"ftyp" + body
    meta = struct.pack(">I", 40) + b"meta" + bytes(32)
    return box + meta


class FrontClient:
    """Requests through the whole service in this process: the front (probes, admission, headers,
    access line, metrics, refusals) and the app behind it, as ASGI messages, no socket.

    ``open``, ``get`` and ``post`` take Werkzeug's ``EnvironBuilder`` arguments (``data``,
    ``content_type``, ``headers``, ``query_string``...), as Flask's test client does, and return
    the answer as a Werkzeug ``Response``. The client never hangs up.
    """

    def __init__(self, front: Front) -> None:
        self.front = front

    def open(self, path: str, method: str = "GET", **kwargs: Any) -> Response:
        builder = EnvironBuilder(path, method=method, **kwargs)
        try:
            request = Request(builder.get_environ())
            body = request.get_data()
        finally:
            builder.close()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": request.path,
            "raw_path": request.path.encode(),
            "query_string": request.query_string,
            "root_path": "",
            "headers": [
                (name.lower().encode("latin-1"), value.encode("latin-1"))
                for name, value in request.headers.items()
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        return asyncio.run(self._exchange(scope, body))

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.open(path, "GET", **kwargs)

    def post(self, path: str, **kwargs: Any) -> Response:
        return self.open(path, "POST", **kwargs)

    async def _exchange(self, scope: dict[str, Any], body: bytes) -> Response:
        incoming = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if incoming:
                return incoming.pop()
            await asyncio.Event().wait()  # the client stays until the answer is sent
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.front(scope, receive, send)
        start, *rest = sent
        headers = [
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in start["headers"]
        ]
        content = b"".join(message.get("body", b"") for message in rest)
        return Response(content, status=start["status"], headers=headers)


def unstarted_front(settings: Settings) -> Front:
    """The whole service over an inference pool that never starts (no model is loaded)."""
    card = ModelCard("yolov3-tiny", "opencv", "", 416, (), SCORE_FLOOR)
    return build_front(settings, pool=InferencePool(lambda: None, workers=0, model=card))


def deepstack_client(
    base_url: str, min_confidence: float, model: str = "", api_key: str = ""
) -> Any:
    """PyPI ``deepstack-python``'s client, unchanged, for a server at ``base_url``; ``model``: its
    ``custom_model`` (``/v1/vision/custom/<model>``), none for ``/v1/vision/detection``.

    Skips the test where deepstack-python (the dev extra) is not installed.
    """
    import pytest

    deepstack = pytest.importorskip("deepstack.core", reason="deepstack-python is in the dev extra")
    address = urlparse(base_url)
    return deepstack.DeepstackObject(
        ip=address.hostname,
        port=address.port,
        api_key=api_key,
        timeout=120,
        min_confidence=min_confidence,
        custom_model=model,
    )
