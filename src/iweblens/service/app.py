"""HTTP routes: the Flask application factory and its blueprint. No OpenCV here.

Every response is JSON (or the Prometheus text format), names the replica that served it in
``X-Served-By``, and is logged as one line, so the spread of requests over pods can be read from
either side. Every failure, including the framework's own 404/405/413, is answered in the one
error shape; an unexpected exception becomes a 500 with that shape, never a stack trace.
"""

from __future__ import annotations

import io
import logging
import math
import time
from concurrent.futures import CancelledError
from importlib import resources
from typing import IO

from flask import Blueprint, Flask, Request, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.utils import cached_property

from iweblens.config import Settings
from iweblens.detection import DetectionParams, ImageDecodeError, Inference
from iweblens.inference.cost import decode_cost, work_units
from iweblens.inference.images import ImageLimits
from iweblens.inference.pool import InferencePool, JobDropped, ModelUnavailableError, build_pool
from iweblens.inference.resources import memory_allotment
from iweblens.inference.sizing import request_budget
from iweblens.service.admission import Admission, AdmissionEvents, Shed, Ticket
from iweblens.service.answers import answer
from iweblens.service.auth import ApiKeys, auth_blueprint
from iweblens.service.conventions import (
    REQUEST_ID_HEADER,
    common_headers,
    log_access,
    method_label,
    request_id,
)
from iweblens.service.deepstack import deepstack_blueprint
from iweblens.service.metrics import ServiceMetrics
from iweblens.service.options import parse_options, query_lists
from iweblens.service.page import page_blueprint
from iweblens.service.probes import probe
from iweblens.service.protocol import (
    ApiError,
    StrictJSONProvider,
    check_image,
    error_body,
    image_error,
    parse_request,
)

log = logging.getLogger(__name__)
TICKET_KEY = "iweblens.ticket"  # where the front leaves the request's admission ticket
BUFFERED_KEY = "iweblens.buffered"  # set by the front when wsgi.input holds the whole body

api = Blueprint("api", __name__)

HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _settings() -> Settings:
    settings: Settings = current_app.extensions["iweblens.settings"]
    return settings


def _pool() -> InferencePool:
    pool: InferencePool = current_app.extensions["iweblens.pool"]
    return pool


def _admission() -> Admission:
    admission: Admission = current_app.extensions["iweblens.admission"]
    return admission


def _ticket() -> Ticket:
    """The front's ticket for this request; a ticket of its own when the app runs alone."""
    ticket: Ticket | None = request.environ.get("asgi.scope", {}).get(TICKET_KEY)
    if ticket is None:
        ticket = _admission().ticket()
        g.own_ticket = ticket
    return ticket


@api.post("/api/object_detection")
def object_detection() -> Response:
    detection_request = parse_request(request)
    options = parse_options(detection_request, query_lists(request.args))
    params = options.params(_pool().model)
    return answer(
        detection_request, options, params, run_detection(detection_request.image, params)
    )


def run_detection(image: bytes, params: DetectionParams) -> Inference:
    """Check the image, admit it, wait for the model and detect: every detection endpoint's path.

    Raises ``ApiError``: 400, 413 or 415 for the image (413 also when decoding it needs more
    memory than the server has, or its inference alone would outlast ``max_wait`` or the
    shutdown grace), 503 while the model is unavailable; ``Shed`` (503) when the job
    is dropped before inference (client gone, deadline) or cancelled by a shutdown.
    """
    header = check_image(image, ImageLimits.from_settings(_settings()))
    pool = _pool()
    if not pool.wait_ready(timeout=_settings().model_wait_s):
        raise ApiError(503, "model_unavailable", pool.failure or "the model is still loading")
    ticket = _ticket()
    cost = decode_cost(header)
    if cost > _admission().capacity_bytes:
        raise ApiError(
            413, "image_too_large", "decoding this image needs more memory than this server has"
        )
    ticket.admit_job(cost, work_units(header))
    width, height = header.decoded_size
    ticket.large_buffers += width * height * 3
    try:
        future = pool.submit(image, params, ticket)
        ticket.attach(future)
        return future.result()
    except CancelledError:
        raise ticket.refusal or Shed("shutdown", "the server is shutting down", 1) from None
    except JobDropped as dropped:
        raise Shed(dropped.reason, f"the request was dropped ({dropped.reason})", 1) from None
    except ImageDecodeError as error:
        raise image_error(error) from None
    except ModelUnavailableError as error:
        raise ApiError(503, "model_unavailable", str(error)) from None


def _probe(path: str) -> Response:
    status, body, content_type = probe(
        path, _pool(), _admission(), current_app.extensions["iweblens.metrics"]
    )
    return Response(body, status=status, content_type=content_type)


@api.get("/healthz")
def healthz() -> Response:
    return _probe("/healthz")


@api.get("/readyz")
def readyz() -> Response:
    return _probe("/readyz")


@api.get("/metrics")
def metrics() -> Response:
    return _probe("/metrics")


@api.get("/openapi.json")
def openapi() -> Response:
    document = resources.files("iweblens.service").joinpath("openapi.json").read_text()
    return Response(document, content_type="application/json")


@api.app_errorhandler(ApiError)
def handle_api_error(error: ApiError) -> tuple[Response, int]:
    response = jsonify(error.body())
    if isinstance(error, Shed):
        response.headers.update(error.headers())
    return response, error.status


@api.app_errorhandler(HTTPException)
def handle_http_exception(error: HTTPException) -> tuple[Response, int]:
    status = error.code or 500
    code = HTTP_ERROR_CODES.get(status, "http_error")
    response = jsonify(error_body(code, error.description or error.name))
    if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
        response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
    return response, status


@api.app_errorhandler(Exception)
def handle_unexpected(error: Exception) -> tuple[Response, int]:
    log.exception("unhandled error while serving %s %s", request.method, request.path)
    return jsonify(error_body("internal_error", "the server failed to handle the request")), 500


@api.before_app_request
def start_timer() -> None:
    g.started = time.perf_counter()
    g.request_id = request_id(request.headers.get(REQUEST_ID_HEADER))
    current_app.extensions["iweblens.metrics"].in_flight.inc()


@api.after_app_request
def stamp_and_log(response: Response) -> Response:
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    settings = _settings()
    route = request.url_rule.rule if request.url_rule else "unmatched"
    service_metrics: ServiceMetrics = current_app.extensions["iweblens.metrics"]
    method = method_label(request.method)
    service_metrics.requests.labels(method, route, str(response.status_code)).inc()
    service_metrics.latency.labels(route).observe(elapsed)
    rid = g.get("request_id") or request_id(None)
    response.headers.update(common_headers(settings.served_by, rid))
    log_access(request.method, request.path, response.status_code, elapsed, settings.served_by, rid)
    return response


@api.teardown_app_request
def stop_timer(_error: BaseException | None) -> None:
    if "started" in g:
        current_app.extensions["iweblens.metrics"].in_flight.dec()
    if "own_ticket" in g:
        g.own_ticket.close()


class BufferedRequest(Request):
    """Uploads stay in memory (bounded by the body limit and admission), never on disk.

    Werkzeug spools a multipart file part over 500 KB to a temporary file; uploads are never
    stored, and the container's ``/tmp`` is small.
    """

    @cached_property
    def stream(self) -> IO[bytes]:
        # The front has read the whole body within the limit and buffered it once: reading it
        # whole returns that buffer itself (BytesIO over bytes), where Werkzeug's size-limiting
        # wrapper would copy it in chunks.
        if BUFFERED_KEY in self.environ:
            buffered: IO[bytes] = self.environ["wsgi.input"]
            return buffered
        return super().stream

    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        return io.BytesIO()


def create_app(settings: Settings, pool: InferencePool | None = None) -> Flask:
    """Build the app; the model loads and warms up in the background (``/readyz`` says when).

    Raises ``ApiKeyError`` for an unusable key or key file, before any model starts loading.
    """
    keys = ApiKeys.from_settings(settings)
    app = Flask(__name__)
    app.request_class = BufferedRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = StrictJSONProvider(app)
    # Every part of a multipart body counts against the body limit, not a separate 500 KB one.
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_body_bytes
    service_metrics = ServiceMetrics()
    if pool is None:
        pool = build_pool(settings, service_metrics.observe_inference)
        pool.start()
    limit = memory_allotment()  # read once: a pod's limit does not change while it runs
    admission = Admission(
        request_budget(settings, limit, pending_networks=0 if pool.ready else pool.workers),
        settings.max_wait,
        pool.workers,
        AdmissionEvents(shed=service_metrics.count_shed, dropped=service_metrics.count_dropped),
        # A grace of 0 stops at once: no job could fit it, so it bounds none.
        grace=settings.graceful_timeout or math.inf,
    )
    service_metrics.watch_admission(admission)
    # Once the networks are loaded, the budget is measured rather than estimated.
    pool.when_ready(lambda: admission.set_budget(request_budget(settings, limit)))
    app.extensions["iweblens.measure_budget"] = lambda: request_budget(settings, limit)
    app.extensions["iweblens.settings"] = settings
    app.extensions["iweblens.metrics"] = service_metrics
    app.extensions["iweblens.pool"] = pool
    app.extensions["iweblens.admission"] = admission
    app.register_blueprint(api)
    app.register_blueprint(page_blueprint)
    app.register_blueprint(deepstack_blueprint(run_detection))
    app.extensions["iweblens.api_keys"] = keys  # the front checks /metrics with the same keys
    app.register_blueprint(auth_blueprint(keys, settings.metrics_require_key))
    return app
