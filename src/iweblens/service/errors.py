"""The error vocabulary: every code the service answers with, its status, meaning and DeepStack
wording, and the one renderer every refusal goes through (the front's and the routes' alike).

A failure is raised as ``ApiError(status, code, message)`` wherever it is found and rendered once,
by ``render``: the native shape ``{"error": {"code", "message"}}``, or on the DeepStack endpoint
DeepStack's ``{"success": false, "error", "code"}`` (in DeepStack's own words where it has them,
CodeProject.AI's ``code``, the status, added). ``CODES`` is the whole vocabulary: the OpenAPI
document's ``ErrorCode`` enum lists the same codes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

__all__ = [
    "CHALLENGE",
    "CODES",
    "DEEPSTACK_BLUEPRINT",
    "DEEPSTACK_PREFIX",
    "NO_IMAGE",
    "ApiError",
    "ErrorCode",
    "error_body",
    "from_http",
    "install",
    "render",
]

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="iweblens"'}  # sent with every 401
DEEPSTACK_BLUEPRINT = "deepstack"  # the blueprint of the DeepStack routes
DEEPSTACK_PREFIX = "/v1/vision/"  # every path answered in DeepStack's error shape
NO_IMAGE = "No valid image file found"


@dataclass(frozen=True)
class ErrorCode:
    """One code: its HTTP status (None: the framework's status, which varies), what it means,
    and DeepStack's own wording for it when DeepStack has one."""

    status: int | None
    meaning: str
    deepstack: str | None = None


CODES: Mapping[str, ErrorCode] = {
    "bad_request": ErrorCode(400, "the request is not HTTP the service can read"),
    "missing_boundary": ErrorCode(400, "a multipart content type without its boundary"),
    "missing_image": ErrorCode(400, "no image in the body", NO_IMAGE),
    "empty_image": ErrorCode(400, "the image is 0 bytes", NO_IMAGE),
    "image_not_a_file": ErrorCode(400, "the multipart part 'image' is a text field"),
    "multiple_images": ErrorCode(400, "more than one file part named 'image'"),
    "malformed_json": ErrorCode(400, "the JSON body is not JSON, or not an object"),
    "non_finite_number": ErrorCode(400, "the JSON holds NaN, an infinity or 1e400"),
    "json_too_complex": ErrorCode(400, "the JSON nests or counts past the JSON bounds"),
    "invalid_base64": ErrorCode(400, "the JSON 'image' is not base64"),
    "invalid_image": ErrorCode(400, "the bytes are no complete image", "invalid image file"),
    "invalid_option": ErrorCode(400, "an option is malformed or out of range"),
    "unknown_class": ErrorCode(400, "a class filter names no class of the model"),
    "unknown_model": ErrorCode(400, "the model option names no model"),
    "model_not_loaded": ErrorCode(400, "the model exists but this server does not load it"),
    "unauthorized": ErrorCode(401, "no API key, or not a valid one", "Incorrect api key"),
    "not_found": ErrorCode(404, "no route at this path"),
    "model_not_found": ErrorCode(404, "a DeepStack custom route names no model served here"),
    "method_not_allowed": ErrorCode(405, "the route does not take this method"),
    "request_timeout": ErrorCode(408, "the request did not arrive within the read timeout"),
    "payload_too_large": ErrorCode(413, "the body is over the body limit"),
    "image_too_large": ErrorCode(413, "the image is over the image limits or the memory"),
    "unsupported_media_type": ErrorCode(415, "the content type is none the endpoint reads"),
    "unsupported_image_format": ErrorCode(415, "a valid image in a format not supported"),
    "http_error": ErrorCode(None, "another error of the HTTP framework (its status)"),
    "internal_error": ErrorCode(500, "the server failed", "error occurred on the server"),
    "model_unavailable": ErrorCode(503, "the model is loading or failed to load"),
    "overloaded": ErrorCode(503, "shed to protect the service (Retry-After)"),
    "shutting_down": ErrorCode(503, "the server is shutting down (Retry-After)"),
}
# The framework's own errors, by status; any other status is ``http_error``.
_HTTP_CODES = {
    CODES[code].status: code
    for code in (
        "bad_request",
        "not_found",
        "method_not_allowed",
        "payload_too_large",
        "unsupported_media_type",
    )
}


class ApiError(Exception):
    """A request the service refuses, with the HTTP status and a stable machine-readable code
    (one of ``CODES``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)

    def headers(self) -> dict[str, str]:
        """The answer's extra headers: the challenge on a 401."""
        return dict(CHALLENGE) if self.status == 401 else {}


class _FrameworkError(ApiError):
    """An error Werkzeug raised (routing, form parsing), with the headers it asks for."""

    def __init__(self, status: int, code: str, message: str, extra: dict[str, str]) -> None:
        super().__init__(status, code, message)
        self._extra = extra

    def headers(self) -> dict[str, str]:
        return {**super().headers(), **self._extra}


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one native error shape every failure is answered with."""
    return {"error": {"code": code, "message": message}}


def from_http(error: HTTPException) -> ApiError:
    """A Werkzeug ``HTTPException`` as an ``ApiError`` (a 405 keeps its ``Allow`` header)."""
    status = error.code or 500
    valid: list[str] | None = getattr(error, "valid_methods", None)
    extra = {"Allow": ", ".join(valid)} if status == 405 and valid else {}
    code = _HTTP_CODES.get(status, "http_error")
    return _FrameworkError(status, code, error.description or error.name, extra)


def render(error: ApiError, deepstack: bool) -> tuple[bytes, dict[str, str]]:
    """The JSON body (UTF-8, compact, newline-terminated) and extra headers of ``error``.

    ``deepstack``: in DeepStack's shape, for clients of the DeepStack endpoint.
    """
    if deepstack:
        wording = CODES[error.code].deepstack if error.code in CODES else None
        shape: dict[str, Any] = {
            "success": False,
            "error": wording or error.message,
            "code": error.status,
        }
    else:
        shape = error.body()
    text = json.dumps(shape, separators=(",", ":"), allow_nan=False)
    return f"{text}\n".encode(), error.headers()


def install(app: Flask) -> None:
    """Answer every failure raised in ``app``'s routes through ``render``.

    An unexpected exception is logged with its stack trace and answered 500 ``internal_error``.
    """

    def respond(error: ApiError) -> Response:
        body, headers = render(error, request.path.startswith(DEEPSTACK_PREFIX))
        return Response(body, error.status, headers, content_type="application/json")

    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return respond(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        return respond(from_http(error))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unhandled error while serving %s %s", request.method, request.path)
        return respond(ApiError(500, "internal_error", "the server failed to handle the request"))
