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
from iweblens.detection import ImageDecodeError
from iweblens.inference.pool import InferencePool, ModelUnavailableError, build_pool
from iweblens.service.metrics import ServiceMetrics
from iweblens.service.page import page_blueprint
from iweblens.service.protocol import (
    ApiError,
    check_image,
    error_body,
    parse_request,
    render_detections,
)

access_log = logging.getLogger("iweblens.access")
log = logging.getLogger(__name__)

api = Blueprint("api", __name__)

HTTP_ERROR_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _settings() -> Settings:
    return current_app.extensions["iweblens.settings"]


def _pool() -> InferencePool:
    return current_app.extensions["iweblens.pool"]


@api.post("/api/object_detection")
def object_detection() -> Response:
    detection_request = parse_request(request)
    check_image(detection_request.image, _settings().max_pixels)
    pool = _pool()
    if not pool.wait_ready(timeout=_settings().timeout):
        raise ApiError(503, "model_unavailable", pool.failure or "the model is still loading")
    try:
        detections = pool.submit(detection_request.image).result()
    except ImageDecodeError:
        raise ApiError(400, "invalid_image", "the data is not a decodable image") from None
    except ModelUnavailableError as error:
        raise ApiError(503, "model_unavailable", str(error)) from None
    return jsonify(render_detections(detection_request, detections))


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


@api.teardown_app_request
def stop_timer(_error: BaseException | None) -> None:
    if "started" in g:
        current_app.extensions["iweblens.metrics"].in_flight.dec()


def create_app(settings: Settings | None = None, pool: InferencePool | None = None) -> Flask:
    """Build the app; the model loads and warms up in the background (``/readyz`` says when)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    service_metrics = ServiceMetrics()
    if pool is None:
        pool = build_pool(settings, service_metrics.observe_inference)
        pool.start()
    app.extensions["iweblens.settings"] = settings
    app.extensions["iweblens.metrics"] = service_metrics
    app.extensions["iweblens.pool"] = pool
    app.register_blueprint(api)
    app.register_blueprint(page_blueprint)
    return app
