"""The asynchronous front: reads requests in the event loop, hands only complete ones to threads.

uvicorn parses HTTP in one event loop; this ASGI application decides, at each step of a request,
before it costs a thread or memory the process cannot spare:

* **headers complete**: probes (``/healthz``, ``/readyz``, ``/metrics``) are answered here, in
  the loop, so they never queue behind work (``/metrics`` asks for the API key as the app would,
  from the headers); a declared body over ``max_body_bytes`` is refused (413) unread, as is a
  detection when the inference queue alone is already over ``max_wait`` (503, ``Retry-After``);
* **body arriving** (read here, however slowly it arrives, without a thread): each chunk's memory
  is reserved as it comes (``Admission``), never a declared length, so a connection holds only
  what it has sent; a chunk that does not fit is refused (503, ``Retry-After``), a body past the
  limit too (413), and the server lingers so the client reads the answer (``server``);
* **body complete**: the request goes to the Flask app (the routes) on a thread of its own
  (a2wsgi), which parses it, reserves the decoding cost from the image header and queues the
  image;
* **client gone** (``http.disconnect``): its job, if still queued, is dropped before inference;
* **shutdown past the grace** (the request's task cancelled): a request not yet answered is
  answered 503 (``shutting_down``).

The front is the service's one edge: every answer, its own or the app's, gets its headers
stamped, its access-log line written and its metrics counted here (``Exchange``), and every
refusal made here is rendered by ``errors``, as the app's are. ``build_front`` is the composition
root: the collaborators (``context.Service``), the app and the front, built once.
"""

from __future__ import annotations

import asyncio
import ctypes
import io
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from a2wsgi import WSGIMiddleware
from flask import Flask
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from iweblens.config import Settings
from iweblens.inference.pool import InferencePool
from iweblens.service.access import (
    REQUEST_ID_HEADER,
    common_headers,
    log_access,
    method_label,
    request_id,
)
from iweblens.service.admission import Shed, Ticket
from iweblens.service.app import create_app
from iweblens.service.auth import presented_key, require_key_of
from iweblens.service.context import (
    BODY_KEY,
    BUFFERED_KEY,
    STARTED_KEY,
    TICKET_KEY,
    Service,
    build_service,
)
from iweblens.service.deepstack import queues_inference
from iweblens.service.errors import DEEPSTACK_PREFIX, ApiError, from_http, render
from iweblens.service.metrics import ServiceMetrics
from iweblens.service.probes import probe

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Set by ``server.FrontProtocol``: the monotonic time by which the whole request must have arrived.
READ_DEADLINE_KEY = "iweblens.read_deadline"
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PROBE_METHODS = ("GET", "HEAD", "OPTIONS")
# The route label of requests that match no route of the app (404, 405, redirects).
UNMATCHED = "unmatched"
# The native detection route; it and the DeepStack ones queue an inference, so are refused
# unread while the server is shutting down.
NATIVE_DETECTION_PATH = "/api/object_detection"
# How often a body read wakes up to look at its deadline and at a shutdown in progress.
BODY_POLL_S = 0.5
# After a request whose body and decoded pixels reach this much, freed memory is handed back to
# the system (malloc_trim). Not the request's reservation: that also counts fixed allowances and
# the NumPy letterbox's temporaries (14 MiB for a 640x480 photo), and a trim after every ordinary
# request cost 4-8 CPU ms and ~340 page faults each (OpenCV's freed per-forward buffers are
# faulted in again): measured served CPU per 640-px photo, 0.5-CPU cgroup, 64 photos x 3.
TRIM_AFTER_BYTES = 8 * 1024 * 1024
# The memory budget is measured again (when nothing is reserved) at most this often.
REMEASURE_S = 1.0


def body_charge(length: int, content_type: str) -> int:
    """Bytes to reserve for a body of ``length`` bytes while its request lives.

    Peak resident memory per body byte, measured on a live server (11-15 MiB bodies, VmHWM, see
    docs/reliability.md): a raw body 2x (the chunks as they arrive, then the joined body, which
    reaches the app without a copy), multipart 3x (plus the file part), base64 JSON 3.7x (plus the
    document as text and the decoded image).
    """
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return length * 4
    if media == "multipart/form-data":
        return length * 3
    return length * 2


class Front:
    """The ASGI application uvicorn serves (see the module docstring)."""

    def __init__(self, service: Service, app: Flask, threads: int) -> None:
        self.service = service
        self.settings = service.settings
        self.metrics = service.metrics
        self.pool: InferencePool = service.pool
        self.admission = service.admission
        # One thread per request in flight in the app, up to ``threads``; more wait for one here.
        self.wsgi = WSGIMiddleware(_buffered(app.wsgi_app, self.metrics), workers=threads)
        self.routes = app.url_map.bind("localhost")
        self.trimmer = Trimmer()
        self._next_remeasure = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        exchange = Exchange(scope, send, self.settings.served_by, self.metrics)
        method, path = scope["method"], scope["path"]
        if path in PROBE_PATHS and method in ("GET", "HEAD"):
            await self._probe(scope, exchange)
            return
        ticket = self.admission.ticket()
        try:
            body = await self._read_body(scope, receive, ticket)
            if body is None:
                return
            ticket.large_buffers += len(body)
            if path in PROBE_PATHS:
                await self._probe_options(exchange)
                return
            exchange.route = self._route(method, path)
            await self._to_app(scope, receive, exchange, ticket, body)
        except ApiError as error:
            await exchange.refuse(error)
        except asyncio.CancelledError:
            # The server stops waiting for this request (the grace is over): it gets an answer,
            # the process exits even if its job is still running (``server``).
            if exchange.started:
                raise
            await exchange.refuse(Shed("shutdown", "the server is shutting down", 1, close=True))
        finally:
            ticket.close()
            if ticket.large_buffers >= TRIM_AFTER_BYTES:
                self.trimmer.request(self._remeasure)
            else:
                self._remeasure()

    async def _probe(self, scope: Scope, exchange: Exchange) -> None:
        """Answer a probe in the loop; ``/metrics`` asks for the API key as the app would."""
        path = scope["path"]
        if path == "/metrics" and self.settings.metrics_require_key:
            # Headers only: a GET carries no multipart form to hold an ``api_key`` field.
            key = presented_key(Headers(_header_map(scope)), lambda: None)
            try:
                require_key_of(self.service.keys, key)
            except ApiError as error:
                await exchange.refuse(error)
                return
        status, body, content_type = probe(path, self.pool, self.admission, self.metrics)
        await exchange.answer(status, body, content_type)

    async def _probe_options(self, exchange: Exchange) -> None:
        """A probe path asked with another method: its options (200), or 405, as any route."""
        if exchange.scope["method"] != "OPTIONS":
            raise from_http(MethodNotAllowed(PROBE_METHODS))
        allow = [("Allow", ", ".join(PROBE_METHODS))]
        await exchange.answer(200, b"", "text/html; charset=utf-8", allow)

    def _remeasure(self) -> None:
        # Until the networks are loaded, the budget counts them as an estimate instead. At most
        # once a REMEASURE_S: the allocator's holdings change slowly.
        now = time.monotonic()
        if self.pool.ready and now >= self._next_remeasure:
            self._next_remeasure = now + REMEASURE_S
            self.admission.remeasure(self.service.measure_budget)

    def _route(self, method: str, path: str) -> str:
        """The app's rule for the request (its metric label), or ``UNMATCHED``."""
        try:
            rule, _ = self.routes.match(path, method, return_rule=True)
        except HTTPException:
            return UNMATCHED
        return str(rule.rule)

    async def _read_body(self, scope: Scope, receive: Receive, ticket: Ticket) -> bytes | None:
        """The whole body, with its memory reserved; None if the client left."""
        headers = _header_map(scope)
        content_type = headers.get("content-type", "")
        limit = self.settings.max_body_bytes
        length: int | None = None
        if "content-length" in headers:
            text = headers["content-length"]
            if not text.isdigit():
                raise ApiError(400, "bad_request", "the Content-Length header is not a number")
            length = int(text)
            if length > limit:
                raise _too_large(limit)
        if length == 0 or (length is None and "transfer-encoding" not in headers):
            return b""
        if scope["path"] == NATIVE_DETECTION_PATH or queues_inference(scope["path"]):
            self.admission.check_open()
        fallback = time.monotonic() + self.settings.read_timeout

        def deadline() -> float:
            return float(scope.get(READ_DEADLINE_KEY) or fallback)

        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            message = await self._receive_before(receive, deadline)
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            received += len(chunk)
            if received > limit:
                raise _too_large(limit)
            # Memory is reserved for the bytes that have come, never for a declared length: a
            # connection that declares a large body and sends nothing holds nothing.
            ticket.reserve(body_charge(len(chunk), content_type))
            chunks.append(chunk)
        return b"".join(chunks)

    async def _receive_before(self, receive: Receive, deadline: Callable[[], float]) -> Message:
        """The next message; ``ApiError`` 408 past ``deadline()``, 503 past the grace.

        ``deadline()`` is asked again at every wake-up: it becomes infinite once the request
        has arrived in full (``server.FrontProtocol``), however late the front reads it.
        """
        while True:
            now = time.monotonic()
            drain_deadline = self.admission.drain_deadline
            if drain_deadline is not None and now >= drain_deadline:
                raise Shed("shutdown", "the server is shutting down", 1, close=True)
            read_deadline = deadline()
            if now >= read_deadline:
                self.metrics.slow_requests.inc()
                raise ApiError(
                    408,
                    "request_timeout",
                    f"the request did not arrive in full within {self.settings.read_timeout} s",
                )
            remaining = min(read_deadline, drain_deadline or read_deadline) - now
            try:
                return await asyncio.wait_for(receive(), min(remaining, BODY_POLL_S))
            except TimeoutError:
                continue

    async def _to_app(
        self, scope: Scope, receive: Receive, exchange: Exchange, ticket: Ticket, body: bytes
    ) -> None:
        scope[TICKET_KEY] = ticket
        scope[BODY_KEY] = body
        # The app's answers are timed from the hand-off (body read), as their own timings are.
        scope[STARTED_KEY] = exchange.started_at = time.perf_counter()
        scope["headers"] = [
            *((name, value) for name, value in scope["headers"] if name != b"x-request-id"),
            (b"x-request-id", exchange.request_id.encode("ascii")),
        ]
        watcher = asyncio.create_task(_watch_disconnect(receive, ticket))
        try:
            await self.wsgi(scope, _no_more_body, exchange.send_from_app)  # type: ignore[arg-type]
        finally:
            watcher.cancel()


class Exchange:
    """One request's answer: headers stamped, counted and logged once, whoever answers (the
    front, or the app through ``send_from_app``)."""

    def __init__(self, scope: Scope, send: Send, served_by: str, metrics: ServiceMetrics) -> None:
        self.scope = scope
        self._send = send
        self.served_by = served_by
        self.metrics = metrics
        self.started_at = time.perf_counter()
        self.started = False  # the answer has begun (its status line is sent)
        self.status = 0
        self.route = "front"  # the metric label: the app's rule once the request is handed on
        self.request_id = request_id(_header_map(scope).get(REQUEST_ID_HEADER.lower()))

    async def answer(
        self,
        status: int,
        body: bytes,
        content_type: str,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Send a whole answer from the front (stamped, counted and logged)."""
        headers = {"content-type": content_type, "content-length": str(len(body)), **dict(extra)}
        self.route = self.scope["path"] if self.scope["path"] in PROBE_PATHS else "front"
        await self.send_from_app(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()],
            }
        )
        await self.send_from_app({"type": "http.response.body", "body": body})

    async def refuse(self, error: ApiError) -> None:
        """Answer in the error shape; a refusal before the body is read closes the connection."""
        body, extra = render(error, self.scope["path"].startswith(DEEPSTACK_PREFIX))
        if not isinstance(error, Shed) and error.status in (400, 408, 413):
            extra["Connection"] = "close"
        await self.answer(error.status, body, "application/json", extra.items())

    async def send_from_app(self, message: Message) -> None:
        """Send one ASGI message of the answer: the start stamped with the common headers, the
        last body message counted and logged."""
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            stamped = {
                name.lower().encode(): value.encode("latin-1")
                for name, value in common_headers(self.served_by, self.request_id).items()
            }
            kept = [(name, value) for name, value in message["headers"] if name not in stamped]
            message["headers"] = [*kept, *stamped.items()]
        await self._send(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self._record()

    def _record(self) -> None:
        elapsed = time.perf_counter() - self.started_at
        method = self.scope["method"]
        labels = (method_label(method), self.route, str(self.status))
        self.metrics.requests.labels(*labels).inc()
        self.metrics.latency.labels(self.route).observe(elapsed)
        path = self.scope["path"]
        log_access(method, path, self.status, elapsed, self.served_by, self.request_id)


class Trimmer:
    """Hands memory freed by large requests back to the system, one ``malloc_trim`` at a time.

    glibc raises its mmap threshold to the largest buffer freed (up to 32 MiB), after which large
    bodies and decoded images come from its heaps and stay resident once freed: a server idling at
    385 MiB held 449 MiB after a few 11-15 MiB uploads, memory the admission budget counts as free.
    ``malloc_trim(0)`` after such a request gives it back. A fixed threshold (``mallopt``,
    ``MALLOC_MMAP_THRESHOLD_``) would too, but made every inference 15-20 ms slower (OpenCV's
    per-call buffers were mapped and faulted in anew each time): docs/reliability.md. No-op where
    the C library is not glibc.
    """

    def __init__(self) -> None:
        try:
            self._trim: Callable[[int], int] | None = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self._trim = None
        self._running = False

    def request(self, then: Callable[[], None]) -> None:
        """Trim on a worker thread (unless a trim is under way), then call ``then`` there."""
        if self._trim is None or self._running:
            return
        self._running = True
        asyncio.get_running_loop().run_in_executor(None, self._run, then)

    def _run(self, then: Callable[[], None]) -> None:
        try:
            assert self._trim is not None
            self._trim(0)
            then()
        finally:
            self._running = False


def build_front(settings: Settings, pool: InferencePool | None = None) -> Front:
    """The composition root: the collaborators (``build_service``: keys, metrics, the pool,
    which starts loading unless ``pool`` is given, admission), the app and the front over them.

    Raises what ``build_service`` raises (``ApiKeyError``, model files failing their checks).
    """
    service = build_service(settings, pool)
    return Front(service, create_app(service), settings.threads)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the body is larger than the limit of {limit} bytes")


def _header_map(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


async def _watch_disconnect(receive: Receive, ticket: Ticket) -> None:
    """Mark the ticket when the client goes away (the body is read, so only that can come)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            ticket.depart()
            return


async def _no_more_body() -> Message:
    # The body was read by the front and reaches the app through ``BODY_KEY``.
    return {"type": "http.request", "body": b"", "more_body": False}


def _buffered(wsgi_app: Callable[..., Any], metrics: ServiceMetrics) -> Callable[..., Any]:
    """Give the WSGI app the front's body as its input: one buffer, no copy, no spooling.

    Counted in flight while a request thread serves it (not while it waits for one).
    """

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        body: bytes = environ["asgi.scope"][BODY_KEY]
        # BytesIO over bytes shares the buffer: reading it whole returns the same object.
        environ["wsgi.input"] = io.BytesIO(body)
        environ["wsgi.input_terminated"] = True
        environ[BUFFERED_KEY] = True
        environ["CONTENT_LENGTH"] = str(len(body))
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        with metrics.in_flight.track_inprogress():
            return wsgi_app(environ, start_response)

    return app
