"""The wire protocol: what a detection request may look like, and what the answers look like.

Three request flavours reach ``POST /api/object_detection``:

* ``multipart/form-data`` with one file part named ``image``: the reference client users are given;
* ``application/json`` ``{"id": ..., "image": "<base64>"}``, or that object encoded once more as a
  JSON string, which is what the later clients send (``requests.post(url, json=json.dumps(data))``);
* a raw image body (``image/*`` or ``application/octet-stream``).

The JSON flavour is answered in its own shape (id echoed, accuracy a float in [0, 1]); the other two
in the assignment's shape (accuracy a string with two decimals on a 0-100 scale).
"""

from __future__ import annotations

import binascii
import enum
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from werkzeug import Request

from iweblens.detection import Detection, ImageDecodeError
from iweblens.inference.images import ImageHeader, ImageTooLargeError, inspect_image

if TYPE_CHECKING:
    from collections.abc import Sequence

JSON_TYPES = ("application/json",)
RAW_TYPES = ("application/octet-stream",)
_DATA_URL_PREFIX = re.compile(r"^data:[\w/+.-]+;base64,")
_WHITESPACE = re.compile(rb"\s+")


class ApiError(Exception):
    """A request the service refuses, with the HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict[str, Any]:
    """The one error shape every failure is answered with."""
    return {"error": {"code": code, "message": message}}


class Flavour(enum.Enum):
    MULTIPART = "multipart"
    JSON = "json"
    RAW = "raw"


@dataclass(frozen=True)
class DetectionRequest:
    """An image to run detection on, and how the client wants the answer shaped."""

    image: bytes
    flavour: Flavour
    request_id: Any = None
    # The body's other fields (form fields as lists, JSON members): options are read from them.
    fields: dict[str, Any] = field(default_factory=dict, compare=False)


def parse_request(request: Request) -> DetectionRequest:
    """Extract the image from any of the three request flavours, or raise ``ApiError``."""
    mimetype = request.mimetype
    if mimetype == "multipart/form-data":
        return _parse_multipart(request)
    if mimetype in JSON_TYPES or mimetype.endswith("+json"):
        return _parse_json(request.get_data())
    if mimetype.startswith("image/") or mimetype in RAW_TYPES:
        return DetectionRequest(_non_empty(request.get_data()), Flavour.RAW)
    shown = mimetype or "none"
    raise ApiError(
        415,
        "unsupported_media_type",
        f"content type {shown!r} is not supported; send multipart/form-data with a file part "
        "named 'image', application/json with a base64 'image' field, or a raw image/* body",
    )


def _non_empty(data: bytes) -> bytes:
    if not data:
        raise ApiError(400, "empty_image", "the image is empty (0 bytes)")
    return data


def _parse_multipart(request: Request) -> DetectionRequest:
    upload = request.files.get("image")
    if upload is None:
        raise ApiError(400, "missing_image", "the multipart body has no file part named 'image'")
    fields = request.form.to_dict(flat=False)
    return DetectionRequest(_non_empty(upload.read()), Flavour.MULTIPART, fields=fields)


def _parse_json(body: bytes) -> DetectionRequest:
    try:
        document = json.loads(body)
        if isinstance(document, str):
            # Later clients encode the object to a string, then send that string as JSON.
            document = json.loads(document)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ApiError(400, "malformed_json", "the JSON body must be an object with an 'image'")
    encoded = document.get("image")
    if not isinstance(encoded, str) or not encoded:
        raise ApiError(400, "missing_image", "the JSON object has no non-empty 'image' string")
    request_id = document.get("id")
    image = _non_empty(_decode_base64(encoded))
    # Not the base64 text: it would stay in memory while the request waits for inference.
    fields = {name: value for name, value in document.items() if name != "image"}
    return DetectionRequest(image, Flavour.JSON, request_id, fields=fields)


def _decode_base64(encoded: str) -> bytes:
    text = _DATA_URL_PREFIX.sub("", encoded, count=1)
    try:
        return binascii.a2b_base64(_WHITESPACE.sub(b"", text.encode("ascii")), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ApiError(400, "invalid_base64", "the 'image' field is not valid base64") from None


def check_image(data: bytes, max_pixels: int) -> ImageHeader:
    """The image's header, or ``ApiError`` (413 above ``max_pixels``, 400 for a non-image)."""
    try:
        return inspect_image(data, max_pixels)
    except ImageTooLargeError as error:
        raise ApiError(413, "image_too_large", str(error)) from None
    except ImageDecodeError as error:
        raise ApiError(400, "invalid_image", str(error)) from None


def render_detections(request: DetectionRequest, detections: Sequence[Detection]) -> dict[str, Any]:
    """Shape the detections for the flavour the request came in."""
    if request.flavour is Flavour.JSON:
        return {
            "id": request.request_id,
            "objects": [
                {
                    "label": d.label,
                    "accuracy": round(d.confidence, 4),
                    "rectangle": _rectangle(d),
                }
                for d in detections
            ],
        }
    return {
        "objects": [
            {"label": d.label, "accuracy": f"{d.confidence * 100:.2f}", "rectangle": _rectangle(d)}
            for d in detections
        ]
    }


def _rectangle(d: Detection) -> dict[str, int]:
    return {"left": d.left, "top": d.top, "width": d.width, "height": d.height}
