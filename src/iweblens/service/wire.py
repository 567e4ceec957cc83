"""The wire format: what a detection request may look like, and what the answers look like.

Three request flavours reach ``POST /api/object_detection``:

* ``multipart/form-data`` with one file part named ``image``: the reference client users are given;
  other parts are ignored (DeepStack-style clients send ``api_key``, ``min_confidence``...), but a
  second file named ``image``, a text field named ``image`` or a missing boundary is refused;
* ``application/json`` ``{"id": ..., "image": "<base64>"}``, or that object encoded once more as a
  JSON string, which is what the later clients send (``requests.post(url, json=json.dumps(data))``);
  base64 may be URL-safe and unpadded; numbers must be finite, so every answer is strict JSON;
  the JSON is bounded before it is parsed (``MAX_JSON_DEPTH`` levels, ``MAX_JSON_VALUES``
  values), so no body can make the parser build millions of objects or recurse past its limit;
* a raw image body (``image/*`` or ``application/octet-stream``).

The JSON flavour is answered in its own shape (id echoed, accuracy a float in [0, 1]); the other two
in the assignment's shape (accuracy a string with two decimals on a 0-100 scale).
"""

from __future__ import annotations

import binascii
import enum
import json
import json.decoder
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pybase64
from flask.json.provider import DefaultJSONProvider
from werkzeug import Request

from iweblens.detection import Detection, ImageDecodeError
from iweblens.inference.images import (
    ImageHeader,
    ImageLimits,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    inspect_image,
)
from iweblens.service.errors import ApiError

if TYPE_CHECKING:
    from collections.abc import Sequence

JSON_TYPES = ("application/json",)
RAW_TYPES = ("application/octet-stream",)
_DATA_URL_PREFIX = re.compile(r"^data:[\w/+.-]+;base64,")
_WHITESPACE = re.compile(r"\s+")
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/=_-]")
_URL_SAFE = str.maketrans("-_", "+/")
# The JSON bounds: what a request may hold before the parser builds it. A client sends an object
# of two members (one level, six counted values); options add an array of labels.
MAX_JSON_DEPTH = 32
MAX_JSON_VALUES = 10_000
# The standard parser's own string scanner (C): (text, index after the opening quote) ->
# (the string, index after its closing quote); ValueError for a string that is not JSON.
# Undeclared in the type stubs, but part of the json module since its first version.
_scan_string: Callable[[str, int], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
# Where a JSON text's structure goes on: a bracket, a comma or the start of a string.
_JSON_STRUCTURE = re.compile(r'[\[\]{},"]')


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
    if not request.mimetype_params.get("boundary"):
        raise ApiError(
            400,
            "missing_boundary",
            "the multipart/form-data content type has no boundary parameter, so its parts cannot "
            "be found; let the HTTP client write the Content-Type header (do not set it by hand)",
        )
    uploads = request.files.getlist("image")
    if "image" in request.form:
        raise ApiError(
            400,
            "image_not_a_file",
            "the part named 'image' is a text field (it has no filename); send the image as a "
            "file part, e.g. curl -F image=@photo.jpg",
        )
    if not uploads:
        raise ApiError(400, "missing_image", "the multipart body has no file part named 'image'")
    if len(uploads) > 1:
        raise ApiError(
            400,
            "multiple_images",
            f"one image per request: the multipart body has {len(uploads)} file parts named "
            "'image'",
        )
    fields = request.form.to_dict(flat=False)
    return DetectionRequest(_non_empty(uploads[0].read()), Flavour.MULTIPART, fields=fields)


def _parse_json(body: bytes) -> DetectionRequest:
    try:
        document = _strict_loads(body)
        if isinstance(document, str):
            # Later clients encode the object to a string, then send that string as JSON.
            document = _strict_loads(document)
    except NonFiniteNumberError as error:
        raise ApiError(400, "non_finite_number", str(error)) from None
    except JsonTooComplexError as error:
        raise ApiError(400, "json_too_complex", str(error)) from None
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


class NonFiniteNumberError(ValueError):
    """The JSON holds NaN, Infinity or a number beyond the double range (1e400)."""


class JsonTooComplexError(ValueError):
    """The JSON nests deeper than ``MAX_JSON_DEPTH`` or holds more than ``MAX_JSON_VALUES``."""


def check_json_bounds(text: str) -> None:
    """Raise ``JsonTooComplexError`` when ``text`` nests or counts past the JSON bounds.

    Reads the structure only and builds nothing that is kept: strings are skipped whole by the
    standard parser's own string scanner (the one pass ``json.loads`` makes over them too), and
    the count stops at the first bound passed. Counted: every array, object, string (keys too)
    and comma. Text that is not JSON is left for the parser to refuse.
    """
    depth = counted = 0
    position = 0
    while (token := _JSON_STRUCTURE.search(text, position)) is not None:
        char = token.group()
        position = token.end()
        if char == '"':
            try:
                _, position = _scan_string(text, position)
            except ValueError:
                return  # not a JSON string: the parser refuses the text there
        elif char in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise JsonTooComplexError(
                    f"the JSON nests more than {MAX_JSON_DEPTH} levels deep; send the object "
                    "with its image and options only"
                )
        elif char in "]}":
            depth -= 1
            continue
        counted += 1
        if counted > MAX_JSON_VALUES:
            raise JsonTooComplexError(
                f"the JSON holds more than {MAX_JSON_VALUES} values (arrays, objects, strings "
                "and members); send the object with its image and options only"
            )


def _strict_loads(text: str | bytes) -> Any:
    """``json.loads`` within the JSON bounds, refusing what no strict JSON writer could echo back.

    The bounds are checked before parsing (``JsonTooComplexError``): the standard parser builds
    every value of a document (a Python list of ~56 bytes for each two-byte ``[]``) and recurses
    once per level. Python's parser accepts the literals NaN and Infinity (not JSON) and turns
    1e400 into infinity; echoing either (an id, say) would produce a body that is not JSON.
    Refused, with the number named, rather than echoed as sent: an id is an opaque string in
    every client.
    """
    if isinstance(text, bytes):
        # As json.loads decodes bytes (UTF-8, -16 or -32, read from the first bytes).
        text = text.decode(json.detect_encoding(text), "surrogatepass")
    check_json_bounds(text)

    def refuse(literal: str) -> float:
        raise NonFiniteNumberError(
            f"the JSON holds the number {literal}, which is not finite; numbers must be finite "
            "(ids are best sent as strings)"
        )

    def parse_float(literal: str) -> float:
        value = float(literal)
        return value if math.isfinite(value) else refuse(literal)

    return json.loads(text, parse_float=parse_float, parse_constant=refuse)


def _decode_base64(encoded: str) -> bytes:
    """Standard or URL-safe base64, padding optional, whitespace and a data: URL prefix allowed."""
    try:
        # What every client we know sends: strict standard base64, decoded in one pass. The
        # normalising passes below cost 30 ms of regular expressions on a 12 MP photo's body.
        return pybase64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        pass
    text = _WHITESPACE.sub("", _DATA_URL_PREFIX.sub("", encoded, count=1))
    if (stray := _NOT_BASE64.search(text)) is not None:
        raise ApiError(
            400,
            "invalid_base64",
            f"the 'image' field is not valid base64: {stray.group()!r} at position "
            f"{stray.start()} is outside the base64 alphabets (standard or URL-safe)",
        )
    text = text.rstrip("=").translate(_URL_SAFE)
    if not text or len(text) % 4 == 1 or "=" in text:
        raise ApiError(
            400,
            "invalid_base64",
            "the 'image' field is not valid base64: only padding, padding inside the data, or a "
            "length that leaves one stray character",
        )
    try:
        return pybase64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error as error:
        message = f"the 'image' field is not valid base64: {error}"
        raise ApiError(400, "invalid_base64", message) from None


def check_image(data: bytes, limits: ImageLimits) -> ImageHeader:
    """The image's header, or the ``ApiError`` of ``image_error`` (read from the header only)."""
    try:
        return inspect_image(data, limits)
    except ImageDecodeError as error:
        raise image_error(error) from None


def image_error(error: ImageDecodeError) -> ApiError:
    """The answer to an image the decoders refuse: 413 over the limits, 415 for a valid image in
    a format not supported (HEIC...), 400 for bytes that are no complete image."""
    if isinstance(error, ImageTooLargeError):
        return ApiError(413, "image_too_large", str(error))
    if isinstance(error, UnsupportedImageFormatError):
        return ApiError(415, "unsupported_image_format", str(error))
    return ApiError(400, "invalid_image", str(error))


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON writer, made to refuse NaN and infinities rather than write non-JSON.

    Every answer of the routes goes through it: a non-finite number anywhere is a bug, raised as
    such (and answered 500 in the error shape), never ``Infinity`` on the wire.
    """

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("allow_nan", False)
        return super().dumps(obj, **kwargs)


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
