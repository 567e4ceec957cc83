"""What every answer carries and how it is counted and logged, whoever gives it.

The front stamps, logs and counts every answer with these helpers, its own (probes, refusals made
before a request reaches a thread) and the Flask app's alike.
"""

from __future__ import annotations

import logging
import re
import uuid

access_log = logging.getLogger("iweblens.access")

REQUEST_ID_HEADER = "X-Request-ID"
# A client's id is kept when it is short and plain (what proxies and tracing systems send: UUIDs,
# hex, base64url); anything else is replaced, so a header can never forge or flood a log line.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
# Methods the service or a client might use; any other becomes one label, so odd methods cannot
# create unbounded Prometheus series (81k methods added 89 MiB before).
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"}
)


def request_id(offered: str | None) -> str:
    """The client's ``X-Request-ID`` when it is sane (1-128 plain characters), else a new one."""
    if offered is not None and _REQUEST_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


def method_label(method: str) -> str:
    """The method as a metric label: one of ``KNOWN_METHODS``, or ``other``."""
    return method if method in KNOWN_METHODS else "other"


def common_headers(served_by: str, request_id_value: str) -> dict[str, str]:
    """Headers on every answer: the replica, the request id, and no MIME sniffing."""
    return {
        "X-Served-By": served_by,
        REQUEST_ID_HEADER: request_id_value,
        "X-Content-Type-Options": "nosniff",
    }


def log_access(
    method: str, path: str, status: int, seconds: float, served_by: str, request_id_value: str
) -> None:
    """The one access-log line per answer (``kubectl logs`` shows it with the pod's name)."""
    access_log.info(
        "%s %s %d %.1fms %s %s",
        method,
        path,
        status,
        seconds * 1000,
        served_by,
        request_id_value,
    )
