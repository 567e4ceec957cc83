"""The body parsers, property-based: whatever body arrives, parsing it (the image, the options,
the image's header) returns or raises ``ApiError`` with a 4xx; nothing else escapes (a 500).

No model runs here (the whole app is fuzzed in ``test_reliability_fuzz.py``), so each property
gets hundreds of examples in seconds. Bodies are built from the committed photographs and then
bent: nested deep or wide, numbers and strings at the parser's edges, other encodings, bytes
overwritten, cut or spliced. ``FUZZ_EXAMPLES`` scales every property, as there.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import IMAGES_DIR
from werkzeug.test import EnvironBuilder

from iweblens.config import Settings
from iweblens.detection import ModelCard
from iweblens.inference.engines import SCORE_FLOOR
from iweblens.inference.images import ImageLimits
from iweblens.models.store import ModelPaths
from iweblens.service.errors import ApiError
from iweblens.service.options import OPTION_NAMES, parse_options, query_lists
from iweblens.service.wire import MAX_JSON_DEPTH, check_image, parse_request

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# The photographs, shrunk to their first 4 KiB (a JPEG header and the start of its scan) so that
# each example stays small: the parsers see real headers, the decoders are not run here.
PHOTOS = [path.read_bytes()[:4096] for path in sorted(IMAGES_DIR.glob("*.jpg"))]
LIMITS = ImageLimits.from_settings(Settings())


@pytest.fixture(scope="module")
def model(model_paths: ModelPaths) -> ModelCard:
    return ModelCard("yolov3-tiny", "opencv", "", 416, tuple(model_paths.labels()), SCORE_FLOOR)


def parse_everything(model: ModelCard, body: bytes, content_type: str, query: str = "") -> None:
    """What the detection endpoint does before inference; only a 4xx ``ApiError`` may escape."""
    request = EnvironBuilder(
        method="POST",
        path="/api/object_detection",
        query_string=query,
        data=body,
        content_type=content_type,
    ).get_request()
    try:
        parsed = parse_request(request)
        parse_options(parsed, query_lists(request.args)).params(model)
        check_image(parsed.image, LIMITS)
    except ApiError as error:
        assert 400 <= error.status < 500, (error.status, error.code, error.message)


photos = st.sampled_from(PHOTOS)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
option_values = st.one_of(
    json_values,
    st.sampled_from(["0.5", "1e400", "nan", "-0", "²", "٣", "1_0", "true", "person,dog", " "]),
)
# Raw JSON text the encoder would never write: deep, wide, and at the number parser's edges.
raw_members = st.one_of(
    st.integers(1, 3 * MAX_JSON_DEPTH).map(lambda depth: "[" * depth + "]" * depth),
    st.integers(1, 3 * MAX_JSON_DEPTH).map(lambda depth: '{"a":' * depth + "1" + "}" * depth),
    st.integers(1, 30_000).map(lambda count: "[" + ",".join(["[]"] * count) + "]"),
    st.integers(1, 6_000).map(lambda digits: "9" * digits),
    st.sampled_from(["1e400", "-1e999", "NaN", "Infinity", "1.5e-400", "-0.0", '"\\ud800"']),
    st.integers(1, 20_000).map(lambda count: json.dumps('[{,\\"' * count)),
)


@st.composite
def json_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """A client's ``{"id", "image"}`` with options and raw members, once or twice encoded, in
    UTF-8 (with or without a BOM), -16 or -32, sometimes bent at the byte level."""
    members = [
        f'"id": {draw(st.sampled_from([json.dumps("u-1"), "7", "null"]) | raw_members)}',
        f'"image": {json.dumps(base64.b64encode(draw(photos)).decode())}',
    ]
    for name in draw(st.lists(st.sampled_from([*OPTION_NAMES, "padding"]), max_size=3)):
        value = draw(st.one_of(option_values.map(json.dumps), raw_members))
        members.append(f"{json.dumps(name)}: {value}")
    text = "{" + ", ".join(draw(st.permutations(members))) + "}"
    if draw(st.booleans()):
        text = json.dumps(text)  # the later clients' double encoding
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-32"]))
    body = text.encode(encoding, "surrogatepass")
    return bent(draw, body), draw(
        st.sampled_from(["application/json", "application/json; charset=utf-16", "x/y+json"])
    )


def bent(draw: st.DrawFn, body: bytes) -> bytes:
    """``body``, or it with a few bytes overwritten, cut short or spliced into itself."""
    how = draw(st.sampled_from(["as is", "as is", "overwrite", "cut", "splice"]))
    if how == "overwrite":
        data = bytearray(body)
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
        return bytes(data)
    if how == "cut":
        return body[: draw(st.integers(0, len(body)))]
    if how == "splice":
        start = draw(st.integers(0, len(body)))
        end = draw(st.integers(start, len(body)))
        return body[:start] + body[start:end] * draw(st.integers(0, 3)) + body[end:]
    return body


@FUZZ
@given(body_and_type=json_bodies())
def test_json_bodies(model: ModelCard, body_and_type: tuple[bytes, str]) -> None:
    parse_everything(model, *body_and_type)


@st.composite
def multipart_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    """Parts named ``image`` and others, with or without filenames and types, the boundary
    declared or not, sometimes bent at the byte level."""
    boundary = draw(st.sampled_from(["b0undary", "x", "----WebKitFormBoundary7MA4YWxk"]))
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["image", "api_key", *OPTION_NAMES, "", 'a"b']))
        filename = draw(st.sampled_from(['; filename="photo.jpg"', "", '; filename=""']))
        head = f'Content-Disposition: form-data; name="{name}"{filename}\r\n'
        head += draw(st.sampled_from(["", "Content-Type: image/jpeg\r\n", "Content-Type: x\r\n"]))
        content = draw(photos) if filename else draw(option_values.map(str)).encode()
        parts.append(f"--{boundary}\r\n{head}\r\n".encode() + content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    declared = draw(st.sampled_from([f"; boundary={boundary}", "", "; boundary=other"]))
    return bent(draw, body), f"multipart/form-data{declared}"


@FUZZ
@given(body_and_type=multipart_bodies(), query=st.sampled_from(["", "nms=0.3", "classes=dog"]))
def test_multipart_bodies(model: ModelCard, body_and_type: tuple[bytes, str], query: str) -> None:
    parse_everything(model, *body_and_type, query=query)


@FUZZ
@given(
    photo=photos,
    content_type=st.sampled_from(["image/jpeg", "image/png", "application/octet-stream"]),
    query=st.dictionaries(st.sampled_from(OPTION_NAMES), option_values.map(str), max_size=3),
    data=st.data(),
)
def test_raw_bodies_and_query_options(
    model: ModelCard, photo: bytes, content_type: str, query: dict[str, Any], data: st.DataObject
) -> None:
    parse_everything(model, bent(data.draw, photo), content_type, urlencode(query))
