"""HTTP routes: the Flask application factory and its blueprint. No OpenCV here.

Every response is JSON (or the Prometheus text format), names the replica that served it in
``X-Served-By``, and is logged as one line, so the spread of requests over pods can be read from
either side. Every failure, including the framework's own 404/405/413, is answered in the one
error shape; an unexpected exception becomes a 500 with that shape, never a stack trace.
"""

from __future__ import annotations

import logging
import time
from importlib import resources

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from iweblens.config import Settings
from iweblens.detection import DetectionParams, ImageDecodeError, Inference
from iweblens.inference.images import ImageLimits
from iweblens.inference.pool import InferencePool, ModelUnavailableError, build_pool
from iweblens.service.answers import answer
from iweblens.service.auth import ApiKeys, auth_blueprint
from iweblens.service.deepstack import deepstack_blueprint
from iweblens.service.metrics import ServiceMetrics
from iweblens.service.options import parse_options, query_lists
from iweblens.service.page import page_blueprint
from iweblens.service.protocol import (
    ApiError,
    StrictJSONProvider,
    check_image,
    error_body,
    image_error,
    parse_request,
)

access_log = logging.getLogger("iweblens.access")
log = logging.getLogger(__name__)

api = Blueprint("api", __name__)
BODY_CHUNK_BYTES = 64 * 1024

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


@api.post("/api/object_detection")
def object_detection() -> Response:
    detection_request = parse_request(request)
    options = parse_options(detection_request, query_lists(request.args))
    params = options.params(_pool().model)
    return answer(
        detection_request, options, params, run_detection(detection_request.image, params)
    )


def run_detection(image: bytes, params: DetectionParams) -> Inference:
    """Check the image, wait for the model and detect: every detection endpoint's one path.

    Raises ``ApiError``: 400, 413 or 415 for the image, 503 while the model is unavailable.
    """
    check_image(image, ImageLimits.from_settings(_settings()))
    pool = _pool()
    if not pool.wait_ready(timeout=_settings().timeout):
        raise ApiError(503, "model_unavailable", pool.failure or "the model is still loading")
    try:
        return pool.submit(image, params).result()
    except ImageDecodeError as error:
        raise image_error(error) from None
    except ModelUnavailableError as error:
        raise ApiError(503, "model_unavailable", str(error)) from None


@api.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@api.get("/readyz")
def readyz() -> tuple[Response, int]:
    pool = _pool()
    if pool.ready:
        return jsonify({"status": "ready"}), 200
    if pool.failure:
        return jsonify({"status": "failed", "reason": pool.failure}), 503
    return jsonify({"status": "loading"}), 503


@api.get("/metrics")
def metrics() -> Response:
    service_metrics: ServiceMetrics = current_app.extensions["iweblens.metrics"]
    return Response(service_metrics.render(), content_type=service_metrics.content_type)


@api.get("/openapi.json")
def openapi() -> Response:
    document = resources.files("iweblens.service").joinpath("openapi.json").read_text()
    return Response(document, content_type="application/json")


@api.app_errorhandler(ApiError)
def handle_api_error(error: ApiError) -> tuple[Response, int]:
    return jsonify(error.body()), error.status


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
    current_app.extensions["iweblens.metrics"].in_flight.inc()


@api.after_app_request
def stamp_and_log(response: Response) -> Response:
    elapsed = time.perf_counter() - g.get("started", time.perf_counter())
    settings = _settings()
    route = request.url_rule.rule if request.url_rule else "unmatched"
    service_metrics: ServiceMetrics = current_app.extensions["iweblens.metrics"]
    service_metrics.requests.labels(request.method, route, str(response.status_code)).inc()
    service_metrics.latency.labels(route).observe(elapsed)
    response.headers["X-Served-By"] = settings.served_by
    access_log.info(
        "%s %s %d %.1fms %s",
        request.method,
        request.path,
        response.status_code,
        elapsed * 1000,
        settings.served_by,
    )
    return response


@api.after_app_request
def finish_reading_the_body(response: Response) -> Response:
    """Read what the handler left of the request body (up to the body limit) before answering.

    An early refusal (404, 405, 415...) leaves the body unread; gunicorn drains at most 64 KiB of
    it and then closes a connection its answer said would be kept alive, so the client's next
    request on it gets no answer. Over the body limit (413) or from a client that went away, the
    server closes the connection as before.
    """
    try:
        while request.stream.read(BODY_CHUNK_BYTES):
            pass
    except (HTTPException, OSError):
        pass
    return response


@api.teardown_app_request
def stop_timer(_error: BaseException | None) -> None:
    if "started" in g:
        current_app.extensions["iweblens.metrics"].in_flight.dec()


def create_app(settings: Settings, pool: InferencePool | None = None) -> Flask:
    """Build the app; the model loads and warms up in the background (``/readyz`` says when)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = StrictJSONProvider(app)
    service_metrics = ServiceMetrics()
    if pool is None:
        pool = build_pool(settings, service_metrics.observe_inference)
        pool.start()
    app.extensions["iweblens.settings"] = settings
    app.extensions["iweblens.metrics"] = service_metrics
    app.extensions["iweblens.pool"] = pool
    app.register_blueprint(api)
    app.register_blueprint(page_blueprint)
    app.register_blueprint(deepstack_blueprint(run_detection))
    keys = ApiKeys.from_settings(settings)
    app.register_blueprint(auth_blueprint(keys, settings.metrics_require_key))
    return app
