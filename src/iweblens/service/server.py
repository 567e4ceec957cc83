"""The production server: gunicorn with one worker process and a thread per in-flight request.

One process holds the networks (memory stays flat as replicas scale by pods, not processes); its
``gthread`` pool gives each in-flight request its own thread, which waits for the inference pool.
On SIGTERM the worker closes the listening socket (new connections are refused), lets in-flight
requests finish within ``graceful_timeout``, then exits.

Slow clients: gunicorn's gthread worker reads a request with a blocking ``recv`` and no timeout, so
a client that sends part of its headers or body and then stalls (slowloris) holds a request thread
for as long as it keeps the connection open; ``threads`` such clients stop the service. The worker
here gives every request ``read_timeout`` seconds to arrive in full, then drops the connection. A
connection that sends nothing at all is already handled by gunicorn: it waits in a thread for 5 s
at most, then in the event loop (no thread) for ``keepalive`` seconds, then is closed.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, cast

from flask import Flask
from gunicorn.app.base import BaseApplication
from gunicorn.http.errors import NoMoreData
from gunicorn.workers.gthread import TConn, ThreadWorker

from iweblens.config import Settings
from iweblens.service.app import create_app

log = logging.getLogger(__name__)


class RequestReadTimeout(NoMoreData):
    """The client did not send its whole request within ``read_timeout``.

    A ``NoMoreData`` so gunicorn treats it as the client going away (no traceback, connection
    closed) and Werkzeug, reading a body, as a disconnect (400), never as a server error.
    """

    def __str__(self) -> str:
        return "request not received in full before the read timeout"


class DeadlineSocket:
    """A client socket whose reads must all finish before the current request's deadline.

    The clock starts at the request's first read, not when it was queued for a thread, so time
    spent waiting for a free thread is not charged to the client. Each ``recv`` then waits at
    most until the deadline (or less, when gunicorn asked for a shorter timeout), so trickling one
    byte at a time does not extend it. Everything else is the socket's.
    """

    def __init__(self, sock: Any, read_timeout: float) -> None:
        self._sock = sock
        self._read_timeout = read_timeout
        self._deadline: float | None = None

    def start_request(self) -> None:
        self._deadline = None

    def recv(self, size: int, *flags: int) -> bytes:
        if self._deadline is None:
            self._deadline = time.monotonic() + self._read_timeout
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise self._timed_out()
        current = self._sock.gettimeout()
        self._sock.settimeout(remaining if current is None else min(current, remaining))
        try:
            data: bytes = self._sock.recv(size, *flags)
            return data
        except TimeoutError:
            if time.monotonic() >= self._deadline:
                raise self._timed_out() from None
            raise

    def sendall(self, data: bytes) -> None:
        # A client that stops reading its answer is dropped after the same time.
        self._sock.settimeout(self._read_timeout)
        self._sock.sendall(data)

    def _timed_out(self) -> RequestReadTimeout:
        log.warning(
            "dropping a connection: request not received in full within %s s (read_timeout)",
            self._read_timeout,
        )
        return RequestReadTimeout()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class GuardedThreadWorker(ThreadWorker):
    """gunicorn's gthread worker, with a read deadline per request and a clean stop."""

    def enqueue_req(self, conn: TConn) -> None:
        sock: DeadlineSocket
        if isinstance(conn.sock, DeadlineSocket):
            sock = conn.sock
        else:
            server = cast(IWebLensServer, self.app)
            sock = DeadlineSocket(conn.sock, server.settings.read_timeout)
            # A proxy, not a socket: gunicorn only calls socket methods on it.
            conn.sock = cast(socket.socket, sock)
        sock.start_request()
        super().enqueue_req(conn)

    def set_accept_enabled(self, enabled: bool | None) -> None:
        super().set_accept_enabled(enabled)
        if not enabled and not self.alive:
            # Stopping: gunicorn only stops polling its listening sockets until it exits, so the
            # kernel keeps completing handshakes nobody will accept, and those clients are reset
            # at exit. Closed now (the master closed its copies already), they are refused.
            for listener in self.sockets:
                listener.close()


class IWebLensServer(BaseApplication):
    """gunicorn, configured from ``Settings`` rather than a config file or its own argv."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        options: dict[str, Any] = {
            "bind": f"{self.settings.host}:{self.settings.port}",
            "workers": 1,
            "worker_class": GuardedThreadWorker,
            "threads": self.settings.threads,
            "keepalive": self.settings.keepalive,
            "timeout": self.settings.timeout,
            "graceful_timeout": self.settings.graceful_timeout,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
            "proc_name": "iweblens",
        }
        # gunicorn >= 25.1 opens a control socket at one fixed per-user path: replicas on one
        # machine would fight over it, and a read-only root filesystem has no room for it.
        if "control_socket_disable" in self.cfg.settings:
            options["control_socket_disable"] = True
        for key, value in options.items():
            self.cfg.set(key, value)

    # Flask declares the WSGI environ a dict, gunicorn's stubs a MutableMapping: one object.
    def load(self) -> Flask:  # type: ignore[override]
        return create_app(self.settings)


def configure_logging() -> None:
    """One line per request on stderr, as ``kubectl logs`` and ``docker logs`` expect."""
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def serve(settings: Settings) -> None:
    """Run the server until it is told to stop."""
    configure_logging()
    IWebLensServer(settings).run()
