"""The service's collaborators, built once by the composition root and handed to front and app.

``build_service`` is that root: it reads the keys (failing before any model loads), builds the
metrics, the inference pool and admission, and wires them together. The front receives the
``Service`` in its constructor, the Flask app in ``app.extensions["iweblens"]`` (read through
``service_of``): one typed object, never a string key per collaborator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app

from iweblens.config import Settings
from iweblens.inference.pool import InferencePool, build_pool
from iweblens.inference.resources import memory_allotment
from iweblens.inference.sizing import request_budget
from iweblens.models.repository import ModelRepository
from iweblens.service.admission import Admission, AdmissionEvents
from iweblens.service.auth import ApiKeys
from iweblens.service.metrics import ServiceMetrics

EXTENSION = "iweblens"
# What the front hands the app in a request's ASGI scope (``environ["asgi.scope"]`` in the app).
TICKET_KEY = "iweblens.ticket"  # the request's admission ticket
BODY_KEY = "iweblens.body"  # the whole body, read by the front within the limit
STARTED_KEY = "iweblens.started"  # perf_counter() when the request was handed to the app
BUFFERED_KEY = "iweblens.buffered"  # in the WSGI environ: wsgi.input holds the whole body


@dataclass(frozen=True)
class Service:
    """Everything a request may need besides itself.

    ``measure_budget`` measures the bytes requests in flight may reserve now (the process's memory
    limit less what it holds); admission is given it again whenever nothing is reserved.
    """

    settings: Settings
    models: ModelRepository
    pool: InferencePool
    admission: Admission
    metrics: ServiceMetrics
    keys: ApiKeys
    measure_budget: Callable[[], int]


def build_service(settings: Settings, pool: InferencePool | None = None) -> Service:
    """The collaborators for ``settings``; without ``pool``, one is built and starts loading.

    Raises ``ApiKeyError`` for an unusable key or key file, before any model starts loading,
    ``ModelConfigError`` for a model that cannot be served, and what ``build_pool`` raises for
    model files that fail their checks.
    """
    keys = ApiKeys.from_settings(settings)
    metrics = ServiceMetrics()
    models = ModelRepository.from_settings(settings)
    if pool is None:
        pool = build_pool(settings, metrics.observe_inference, models)
        pool.start()
    metrics.know_models(pool.models)
    limit = memory_allotment()  # read once: a pod's limit does not change while it runs
    admission = Admission(
        request_budget(settings, limit, pending_bytes=0 if pool.ready else pool.network_bytes),
        settings.max_wait,
        pool.workers,
        AdmissionEvents(shed=metrics.count_shed, dropped=metrics.count_dropped),
        # A grace of 0 stops at once: no job could fit it, so it bounds none.
        grace=settings.graceful_timeout or math.inf,
    )
    metrics.watch_admission(admission)
    # Once the networks are loaded, the budget is measured rather than estimated.
    pool.when_ready(lambda: admission.set_budget(request_budget(settings, limit)))
    return Service(
        settings, models, pool, admission, metrics, keys, lambda: request_budget(settings, limit)
    )


def service_of(app: Flask | None = None) -> Service:
    """The ``Service`` an app was built with (the current app's when ``app`` is None)."""
    service: Service = (app or current_app).extensions[EXTENSION]
    return service
