"""A stand-in replica for the balancer and runner tests: a tiny HTTP server on loopback."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from iweblens.study.replicas.haproxy import Server


class FakeReplica:
    """A loopback HTTP server that signs responses like a replica and counts the POSTs it got.

    ``ready`` drives ``/readyz``; ``mode`` is ``"ok"``, ``"hang-up"`` (read the request, then
    close the connection without answering, as a replica that dies mid-request) or ``"shed"``
    (answer 503 with ``Connection: close``, as a stopping or overloaded replica that did not run
    the request).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.ready = True
        self.mode = "ok"
        self.posts = 0
        replica = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int) -> None:
                self.send_response(status)
                self.send_header("X-Served-By", replica.name)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                self._answer(200 if replica.ready else 503)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                replica.posts += 1
                if replica.mode == "hang-up":
                    self.close_connection = True
                    self.connection.close()
                    return
                if replica.mode == "shed":
                    self.close_connection = True
                    self._answer(503)
                    return
                self._answer(200)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def as_server(self) -> Server:
        return Server(self.name, "127.0.0.1", self.port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
