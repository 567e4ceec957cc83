"""The answers of ``/healthz``, ``/readyz`` and ``/metrics``: cheap, and never behind the queue.

The front answers them in the event loop, from here; the app has no route of these paths.
"""

from __future__ import annotations

import json

from iweblens.inference.pool import InferencePool
from iweblens.service.admission import Admission
from iweblens.service.metrics import ServiceMetrics

JSON = "application/json"


def probe(
    path: str, pool: InferencePool, admission: Admission, metrics: ServiceMetrics
) -> tuple[int, bytes, str]:
    """``(status, body, content type)`` of one probe path.

    ``/healthz``: the process answers (liveness: never depends on the model or the queue).
    ``/readyz``: 200 once every network is loaded and warm, 503 while loading, after a failure,
    and once a shutdown has begun (so balancers stop sending work).
    ``/metrics``: the Prometheus text format.

    Raises ``KeyError`` for any other path.
    """
    if path == "/healthz":
        return 200, _json({"status": "ok"}), JSON
    if path == "/readyz":
        if pool.failure:
            return 503, _json({"status": "failed", "reason": pool.failure}), JSON
        if admission.draining:
            return 503, _json({"status": "stopping"}), JSON
        if pool.ready:
            return 200, _json({"status": "ready"}), JSON
        return 503, _json({"status": "loading"}), JSON
    if path == "/metrics":
        return 200, metrics.render(), metrics.content_type
    raise KeyError(path)


def _json(document: dict[str, str]) -> bytes:
    return json.dumps(document).encode()
