"""The production server: uvicorn (httptools) serving the front, one process, one event loop.

Requests are read asynchronously: a slow or silent connection costs a parser object in the event
loop, never a thread. Only complete requests reach a thread (``front``); probes are answered in the
loop. uvicorn itself has no deadline for a request's headers and no bound on their size, so
``FrontProtocol`` adds both (per request, pipelined ones included), plus an idle deadline for a
fresh connection and a cap on open connections: past it, another connection makes room (one
lingering, else the oldest idle, else the incomplete request arriving the slowest), never the new
one, so no flood can lock a kubelet probe out. An answer sent while the request is still arriving
(an early 413 or 503) is followed by a lingering close, so that the client reads it instead of a
reset. An ``Upgrade`` offer (``h2c``...) is declined: the request is served as HTTP/1.1.

On SIGTERM: the connections the kernel has already queued are accepted and the listener closes
(new connections are refused), a connection that was idle gets ``SHUTDOWN_IDLE_S`` for a request
already on its way (each connection closes after its answer), ``/readyz`` turns 503, queued jobs
that cannot finish within ``graceful_timeout`` are answered 503 with ``Connection: close`` at once,
the rest are served. ``SHUTDOWN_SLACK_S`` past the grace, what is still unanswered is answered 503,
and the process exits 0, at the latest ``EXIT_SLACK_S`` later, even if a job is still inside a
decoder: within the pod's ``terminationGracePeriodSeconds``.

uvicorn internals this module relies on (uvicorn is pinned to the minor version tested, in
pyproject.toml; ``tests/service/test_uvicorn_internals.py`` fails when one of them goes):
``HttpToolsProtocol.connection_made``, ``HttpToolsProtocol.connection_lost``,
``HttpToolsProtocol.data_received``, ``HttpToolsProtocol.on_message_begin``,
``HttpToolsProtocol.on_url``, ``HttpToolsProtocol.on_header``,
``HttpToolsProtocol.on_headers_complete``, ``HttpToolsProtocol.on_message_complete``,
``HttpToolsProtocol.on_response_complete``, ``HttpToolsProtocol.send_400_response``,
``HttpToolsProtocol.shutdown``, ``HttpToolsProtocol.timeout_keep_alive_handler``,
``HttpToolsProtocol._unset_keepalive_if_required``, ``HttpToolsProtocol.connections``,
``HttpToolsProtocol.cycle``, ``HttpToolsProtocol.loop``, ``HttpToolsProtocol.parser``,
``HttpToolsProtocol.pipeline``, ``HttpToolsProtocol.scope``, ``HttpToolsProtocol.server_state``,
``HttpToolsProtocol.timeout_keep_alive``, ``HttpToolsProtocol.timeout_keep_alive_task``,
``HttpToolsProtocol.transport``, ``HttpToolsProtocol.url``, ``HttpToolsProtocol.flow``,
``HttpToolsProtocol.headers``, ``HttpToolsProtocol.logger``, ``ServerState.total_requests``,
``ServerState.default_headers``, ``RequestResponseCycle.keep_alive``,
``RequestResponseCycle.transport``, ``RequestResponseCycle.response_complete``,
``httptools_impl.STATUS_LINE``, ``Server.capture_signals``, ``Server._captured_signals``,
``Server.shutdown``, ``Server.servers``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from iweblens.config import Settings
from iweblens.service.admission import Admission
from iweblens.service.front import READ_DEADLINE_KEY, build_front

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
# Past the grace and its slack, what is still running is answered 503; this long after that, the
# process exits even if a thread is still inside a decoder or a forward pass (which Python cannot
# interrupt), so that it stops well within the pod's terminationGracePeriodSeconds.
EXIT_SLACK_S = 2.0
# Lingering close after an early answer: at most this long in all and between two reads (nginx's
# lingering_time and lingering_timeout), and this many times the body limit in bytes (a client
# refused for a body somewhat over the limit still reads its 413).
LINGERING_TIME_S = 30.0
LINGERING_TIMEOUT_S = 5.0
LINGERING_BODY_LIMITS = 2


class _HeadersTooLarge(Exception):
    pass


class _AnswerTransport:
    """The transport as a request's cycle sees it: closing it after an answer may linger."""

    def __init__(self, protocol: FrontProtocol) -> None:
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol.transport, name)

    def close(self) -> None:
        self._protocol.close_after_answer()


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
        self._in_message = False  # a request has begun to arrive and has not arrived in full
        self._received = 0  # bytes received since the connection last became busy
        self._shutting_down = False
        self._since = time.monotonic()  # start of the current request, or of idleness
        # A declined Upgrade's request, to parse again without it (empty: a CONNECT, refused).
        self._upgrade_head: bytes | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._linger_end = 0.0
        self._linger_bytes = 0
        # A fresh connection that sends nothing is closed like an idle keep-alive one.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
        if len(self.connections) > self.max_connections:
            self._make_room()

    # -- the connection cap -----------------------------------------------------------------

    @property
    def lingering(self) -> bool:
        return self._linger_timer is not None

    def _make_room(self) -> None:
        """Close one other connection: lingering, else the oldest idle, else the slowest request.

        The new connection is never the one closed (it may be a kubelet's probe); if every other
        connection is busy with a request that has arrived, it is kept over the cap.
        """
        others = [c for c in self.connections if isinstance(c, FrontProtocol) and c is not self]
        now = time.monotonic()
        if lingering := [c for c in others if c.lingering]:
            victim, why = lingering[0], "a lingering one"
        elif idle := [c for c in others if not c._busy]:
            victim, why = min(idle, key=lambda c: c._since), "the oldest idle one"
        elif arriving := [c for c in others if c._in_message]:
            victim = min(arriving, key=lambda c: c._received / max(now - c._since, 1e-3))
            why = "the slowest incomplete request"
        else:
            return
        log.warning("too many connections (%d): closing %s", len(self.connections), why)
        victim.transport.close()

    # -- one request at a time, pipelined or not ---------------------------------------------

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._discard(len(data))
            return
        if not self._busy:
            self._busy = True
            self._received = 0
            self._begin_request()
        self._received += len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        # uvicorn's own ``data_received``, except that an Upgrade is declined and the request
        # served as HTTP/1.1, as a server that does not speak the offered protocol must.
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade as upgrade:
            # httptools skips the body of an Upgrade request and stops: the same request without
            # its Upgrade goes to a fresh parser, followed by everything that came after it.
            head, self._upgrade_head = self._upgrade_head, None
            if not head:  # CONNECT: a tunnel, not a request to serve
                self.send_400_response("CONNECT is not served.")
                return
            self.parser = httptools.HttpRequestParser(self)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
            self._feed(head + data[upgrade.args[0] :])

    def _begin_request(self) -> None:
        """A request starts: its own header counters and deadline (pipelined ones too)."""
        self._since = time.monotonic()
        self._header_bytes = self._header_count = 0
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(
            self.settings.read_timeout, self._headers_timed_out
        )

    def on_message_begin(self) -> None:
        self._in_message = True
        self._begin_request()
        super().on_message_begin()

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
        if self.parser.should_upgrade():
            connect = self.parser.get_method() == b"CONNECT"
            self._upgrade_head = b"" if connect else self._head_without_upgrade()
            return
        self._cancel_header_timer()
        # The body must arrive by the same deadline; the front reads it.
        scope = cast(dict[str, Any], self.scope)  # an ASGI scope may carry extensions of ours
        scope[READ_DEADLINE_KEY] = self._since + self.settings.read_timeout
        super().on_headers_complete()
        self.cycle.transport = cast(asyncio.Transport, _AnswerTransport(self))
        if self._shutting_down:
            self.cycle.keep_alive = False

    def _head_without_upgrade(self) -> bytes:
        """The request line and headers just parsed, less ``Upgrade`` and its Connection token."""
        version = self.parser.get_http_version().encode("ascii")
        lines = [self.parser.get_method() + b" " + self.url + b" HTTP/" + version]
        for name, value in self.headers:
            if name == b"connection":
                tokens = [t.strip() for t in value.split(b",") if t.strip().lower() != b"upgrade"]
                value = b", ".join(tokens)
            if name != b"upgrade" and value:
                lines.append(name + b": " + value)
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def on_message_complete(self) -> None:
        if self._upgrade_head is not None:
            return  # the request is parsed again, without its Upgrade
        self._in_message = False
        # Arrived in full: the front reads what is already here, however late it gets to it.
        cast(dict[str, Any], self.scope)[READ_DEADLINE_KEY] = math.inf
        super().on_message_complete()

    def on_response_complete(self) -> None:
        if self.lingering:
            self.server_state.total_requests += 1
            return
        # A pipelined request may be queued, or arriving, behind the one just answered.
        pending = bool(self.pipeline) or self._in_message
        super().on_response_complete()
        self._busy = pending
        if not pending:
            self._since = time.monotonic()

    # -- lingering close -----------------------------------------------------------------------

    def close_after_answer(self) -> None:
        """Close once an answer is sent; if the client is still sending, linger first.

        Closing a socket with unread data resets it, and a client still sending its body (as
        ``http.client`` and ``requests`` do before they read) sees the reset, not the answer. So
        the write side is shut (the answer, then end of stream) and what arrives is read and
        discarded, for at most ``LINGERING_TIME_S`` in all, ``LINGERING_TIMEOUT_S`` between two
        reads and ``LINGERING_BODY_LIMITS`` body limits in bytes, as nginx's lingering close does.
        """
        if not self._in_message or self.transport.is_closing():
            self.transport.close()
            return
        self._cancel_header_timer()
        self._unset_keepalive_if_required()
        self.pipeline.clear()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._linger_end = self.loop.time() + LINGERING_TIME_S
        self._linger_bytes = LINGERING_BODY_LIMITS * self.settings.max_body_bytes
        self._discard(0)
        self.flow.resume_reading()

    def _discard(self, size: int) -> None:
        self._linger_bytes -= size
        remaining = self._linger_end - self.loop.time()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        if self._linger_bytes <= 0 or remaining <= 0:
            self.transport.close()
            return
        self._linger_timer = self.loop.call_later(
            min(remaining, LINGERING_TIMEOUT_S), self.transport.close
        )

    def eof_received(self) -> None:
        # The client has sent all it will: a lingering close is over (asyncio then closes).
        if self._linger_timer is not None:
            self._linger_timer.cancel()

    # -- shutdown and errors -------------------------------------------------------------------

    def shutdown(self) -> None:
        """Close once the request in progress, or one already on its way, has been answered."""
        self._shutting_down = True
        if self.lingering:
            return  # closes by itself, within the lingering bounds
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
        elif not self._busy:
            self.loop.call_later(SHUTDOWN_IDLE_S, self._close_if_idle)
        # Otherwise its headers are arriving: ``on_headers_complete`` marks its cycle.

    def _close_if_idle(self) -> None:
        if not self._busy and not self.transport.is_closing():
            self.transport.close()

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
        self.close_after_answer()


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
        exit_at = time.monotonic() + self.grace + SHUTDOWN_SLACK_S + EXIT_SLACK_S
        threading.Thread(target=_exit_at, args=(exit_at,), name="exit", daemon=True).start()
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


def _exit_at(deadline: float) -> None:
    """Exit 0 at ``deadline`` unless the process has ended by then (a daemon thread)."""
    time.sleep(max(0.0, deadline - time.monotonic()))
    log.warning("still running past the grace (a job inside native code): exiting now")
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(0)


def configure_logging() -> None:
    """One line per request on stderr, as ``kubectl logs`` and ``docker logs`` expect."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def build_server(settings: Settings) -> FrontServer:
    """The app (model loading in the background), its front, and a configured uvicorn server."""
    front = build_front(settings)
    protocol = type(
        "ConfiguredFrontProtocol",
        (FrontProtocol,),
        {"settings": settings, "max_connections": settings.max_connections},
    )
    config = uvicorn.Config(
        front,
        host=settings.host,
        port=settings.port,
        http=protocol,
        loop="auto",
        lifespan="off",
        ws="none",  # no WebSocket route: an Upgrade is declined, the request served as HTTP/1.1
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=settings.keepalive,
        timeout_graceful_shutdown=settings.graceful_timeout + SHUTDOWN_SLACK_S,
        backlog=2048,
    )
    return FrontServer(config, front.admission, settings.graceful_timeout)


def serve(settings: Settings) -> None:
    """Run the server until it is told to stop.

    Exits with uvicorn's ``STARTUP_FAILURE`` status (3) when it cannot listen (a port taken, a
    host that does not resolve), after uvicorn has logged why.
    """
    configure_logging()
    server = build_server(settings)
    try:
        server.run()
    except SystemExit as stop:
        if server.started:
            raise
        # The networks may still be loading in a thread: an interpreter shutting down around
        # OpenCV's running code aborts in the C++ runtime, so leave without one.
        logging.shutdown()
        os._exit(stop.code if isinstance(stop.code, int) else 1)
