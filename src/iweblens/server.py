"""The production server: gunicorn with one worker process and a thread per in-flight request.

One process holds the networks (memory stays flat as replicas scale by pods, not processes); its
``gthread`` pool gives each in-flight request its own thread, which waits for the inference pool.
On SIGTERM gunicorn closes the listening socket (new connections are refused), lets in-flight
requests finish within ``graceful_timeout``, then exits.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

from .app import create_app
from .config import Settings


class IWebLensServer(BaseApplication):
    """gunicorn, configured from ``Settings`` rather than a config file or its own argv."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        options: dict[str, Any] = {
            "bind": f"{self.settings.host}:{self.settings.port}",
            "workers": 1,
            "worker_class": "gthread",
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

    def load(self) -> Flask:
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
