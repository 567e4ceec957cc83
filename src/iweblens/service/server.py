"""The production server: uvicorn (httptools) serving the front, one process, one event loop.

Requests are read asynchronously: a slow or silent connection costs a parser object in the event
loop, never a thread. Only complete requests reach a thread (``front``); probes are answered in the
loop. uvicorn itself has no deadline for a request's headers and no bound on their size, so
``FrontProtocol`` adds both, plus an idle deadline for a fresh connection and a cap on open
connections (the oldest connection not busy with a request makes room for a new one, so a flood of
idle connections cannot lock a kubelet probe out).

On SIGTERM: the connections the kernel has already queued are accepted and the listener closes
(new connections are refused), a connection that was idle gets ``SHUTDOWN_IDLE_S`` for a request
already on its way (each connection closes after its answer), ``/readyz`` turns 503, queued jobs
that cannot finish within ``graceful_timeout`` are answered 503 with ``Connection: close`` at once,
the rest are served, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from iweblens.config import Settings
from iweblens.service.admission import Admission
from iweblens.service.app import create_app
from iweblens.service.front import READ_DEADLINE_KEY, Front

log = logging.getLogger(__name__)

# Request line and headers together (common servers allow ~8 KiB a field and 100 fields; real
# clients send well under 4 KiB). Beyond it: 431, connection closed.
MAX_HEADER_BYTES = 64 * 1024
MAX_HEADER_COUNT = 100
# How often a drain re-checks which queued jobs can still finish in time.
DRAIN_RECUT_S = 0.5
# Time a shutdown gives the last running inference and the answers to leave, past the grace.
SHUTDOWN_SLACK_S = 5
# On SIGTERM, how long an idle connection stays open for a request already on its way (a client
# that has just connected, or reuses a kept-alive connection): closing it at once resets that
# request unanswered. Then, how long the loop goes on accepting the connections the kernel has
# already queued: closing the listener resets them, after their clients have sent a request.
SHUTDOWN_IDLE_S = 1.0
ACCEPT_DRAIN_S = 0.05


class _HeadersTooLarge(Exception):
    pass


class FrontProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines and bounds it lacks (module docstring)."""

    settings: Settings  # set by ``serve`` on a subclass
    max_connections: int

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._header_count = 0
        self._headers_too_large = False
        self._busy = False  # a request is being received or answered
        self._shutting_down = False
        self._since = time.monotonic()
        # A fresh connection that sends nothing is closed like an idle keep-alive one.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
        if len(self.connections) > self.max_connections:
            self._evict_oldest_idle()

    def _evict_oldest_idle(self) -> None:
        idle = [c for c in self.connections if isinstance(c, FrontProtocol) and not c._busy]
        if idle:
            victim = min(idle, key=lambda c: c._since)
            log.warning("too many connections (%d): closing the oldest idle one", len(idle))
            victim.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._busy:
            # The first byte of a request starts its clock: the headers must follow in time.
            self._busy = True
            self._since = time.monotonic()
            self._header_bytes = self._header_count = 0
            self._header_timer = self.loop.call_later(
                self.settings.read_timeout, self._headers_timed_out
            )
        super().data_received(data)

    def on_url(self, url: bytes) -> None:
        self._count_header_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._count_header_bytes(len(name) + len(value))
        super().on_header(name, value)

    def _count_header_bytes(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES or self._header_count > MAX_HEADER_COUNT:
            self._headers_too_large = True
            raise _HeadersTooLarge  # httptools stops parsing; uvicorn calls send_400_response

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        # The body must arrive by the same deadline; the front reads it.
        scope = cast(dict[str, Any], self.scope)  # an ASGI scope may carry extensions of ours
        scope[READ_DEADLINE_KEY] = self._since + self.settings.read_timeout
        super().on_headers_complete()
        if self._shutting_down:
            self.cycle.keep_alive = False

    def shutdown(self) -> None:
        """Close once the request in progress, or one already on its way, has been answered."""
        self._shutting_down = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif not self._busy:
            self.loop.call_later(SHUTDOWN_IDLE_S, self._close_if_idle)
        # Otherwise its headers are arriving: ``on_headers_complete`` marks its cycle.

    def _close_if_idle(self) -> None:
        if not self._busy and not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        self._busy = False
        self._since = time.monotonic()
        super().on_response_complete()

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        log.warning(
            "dropping a connection: headers not received within %s s (read_timeout)",
            self.settings.read_timeout,
        )
        self.transport.close()

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def send_400_response(self, msg: str) -> None:
        """Malformed requests (bad chunk sizes included) get the one JSON error shape."""
        self._cancel_header_timer()
        if self._headers_too_large:
            status, code, message = 431, "headers_too_large", "the request headers are too large"
        else:
            status, code, message = 400, "bad_request", "the request is not valid HTTP"
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: application/json\r\nx-content-type-options: nosniff\r\n"
            b"x-served-by: " + self.settings.served_by.encode("latin-1") + b"\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class FrontServer(uvicorn.Server):
    """uvicorn's server, telling admission to drain before it waits for connections to end."""

    def __init__(self, config: uvicorn.Config, admission: Admission, grace: float) -> None:
        super().__init__(config)
        self.admission = admission
        self.grace = grace

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn re-raises the signal once it has shut down, so the process dies of SIGTERM. A
        # SIGTERM is how Kubernetes stops a pod: once everything accepted was answered, that is
        # a clean stop, exit code 0.
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()

    async def shutdown(self, sockets: Any = None) -> None:
        cancelled = self.admission.drain(self.grace)
        log.info(
            "shutting down: %d queued job(s) answered 503 now; the rest get %s s to finish",
            len(cancelled),
            self.grace,
        )
        loop = asyncio.get_running_loop()
        loop.call_later(self.grace, self._end_of_grace)
        recut = loop.create_task(self._recut_until(loop.time() + self.grace))
        try:
            for server in self.servers:
                for listener in server.sockets:
                    # A full queue makes the kernel drop new handshakes (the clients retry, then
                    # find the port closed) while the loop accepts what it has already queued.
                    with socket.socket(fileno=os.dup(listener.fileno())) as queue:
                        queue.listen(0)
            await asyncio.sleep(ACCEPT_DRAIN_S)
            await super().shutdown(sockets)
        finally:
            recut.cancel()

    async def _recut_until(self, end: float) -> None:
        # The pod may run slower than the rate measured so far: what no longer fits is answered
        # as soon as that shows, not when the grace runs out.
        while asyncio.get_running_loop().time() < end:
            await asyncio.sleep(DRAIN_RECUT_S)
            if cancelled := self.admission.recut():
                log.info("draining: %d more queued job(s) answered 503", len(cancelled))

    def _end_of_grace(self) -> None:
        cancelled = self.admission.cancel_all()
        if cancelled:
            log.warning("grace period over: %d queued job(s) answered 503", len(cancelled))


def configure_logging() -> None:
    """One line per request on stderr, as ``kubectl logs`` and ``docker logs`` expect."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def build_server(settings: Settings) -> FrontServer:
    """The app (model loading in the background), its front, and a configured uvicorn server."""
    app = create_app(settings)
    protocol = type(
        "ConfiguredFrontProtocol",
        (FrontProtocol,),
        {"settings": settings, "max_connections": settings.max_connections},
    )
    config = uvicorn.Config(
        Front(app, settings.threads),
        host=settings.host,
        port=settings.port,
        http=protocol,
        loop="auto",
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=settings.keepalive,
        timeout_graceful_shutdown=settings.graceful_timeout + SHUTDOWN_SLACK_S,
        backlog=2048,
    )
    return FrontServer(config, app.extensions["iweblens.admission"], settings.graceful_timeout)


def serve(settings: Settings) -> None:
    """Run the server until it is told to stop."""
    configure_logging()
    build_server(settings).run()
