"""Hostile input, property-based: whatever arrives, the answer is a 200 or the error JSON, no 5xx.

Requests go through the whole service in process (``FrontClient``: the front, then the app) with
the real model, so every layer a request crosses (Werkzeug's parsers, the protocol, Pillow's
header check, OpenCV's decoders, the detector) sees the generated input. Images are fuzzed from
real files in several formats, since random bytes alone rarely get past the first byte of a decoder.
"""

from __future__ import annotations

import base64
import io
import json
import os
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_contract import check_answer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support import TESTS_DIR, FrontClient
from werkzeug.datastructures import MultiDict

from iweblens.config import Settings
from iweblens.service.front import build_front

URL = "/api/object_detection"
# FUZZ_EXAMPLES=5000 for a deep run; the suite's default keeps the module under a minute.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Inputs that decode run the network (~0.1 s each): fewer of them.
FUZZ_DECODABLE = settings(FUZZ, max_examples=max(1, EXAMPLES * 2 // 5))


@pytest.fixture(scope="module")
def client(model_paths: object) -> Iterator[FrontClient]:
    front = build_front(Settings())
    assert front.pool.wait_ready(timeout=120), front.pool.failure
    yield FrontClient(front)
    front.pool.close()


def check_contract(response: Any) -> None:
    check_answer(response.status_code, response.headers, response.get_json())


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _seed_images() -> list[bytes]:
    """Small real images in every format Pillow or OpenCV might be handed."""
    photo = Image.open(TESTS_DIR / "images" / "000000012807.jpg").convert("RGB")
    small = photo.resize((96, 72))
    return [
        encoded(small, "JPEG", quality=80),
        encoded(small, "JPEG", progressive=True),
        encoded(small, "PNG"),
        encoded(small.convert("RGBA"), "PNG"),
        encoded(small.convert("L"), "PNG"),
        encoded(small.convert("P"), "GIF"),
        encoded(small, "BMP"),
        encoded(small, "TIFF"),
        encoded(small, "WEBP"),
        encoded(small.convert("CMYK"), "JPEG"),
    ]


SEEDS = _seed_images()
MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"RIFF", b"PK"]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A real image with bytes overwritten, cut short or spliced: what decoders choke on."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        data += draw(st.binary(max_size=64))
    return bytes(data)


hostile_bytes = st.one_of(
    st.binary(max_size=2048),
    st.builds(lambda magic, tail: magic + tail, st.sampled_from(MAGIC), st.binary(max_size=512)),
    mutated_images(),
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
content_types = st.one_of(
    st.sampled_from(
        [
            "image/jpeg",
            "image/png",
            "image/",
            "application/octet-stream",
            "application/json",
            "application/json; charset=utf-16",
            "application/vnd.api+json",
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "application/x-www-form-urlencoded",
            "text/plain",
            "",
        ]
    ),
    header_text,
)


@FUZZ
@given(body=hostile_bytes, content_type=content_types)
def test_any_body_with_any_content_type(
    client: FrontClient, body: bytes, content_type: str
) -> None:
    check_contract(client.post(URL, data=body, content_type=content_type))


@FUZZ_DECODABLE
@given(image=mutated_images(), content_type=st.sampled_from(["image/jpeg", "image/png"]))
def test_mutated_images_as_raw_bodies(client: FrontClient, image: bytes, content_type: str) -> None:
    check_contract(client.post(URL, data=image, content_type=content_type))


part = st.tuples(
    st.one_of(st.just("image"), header_text),
    st.one_of(st.none(), header_text),
    hostile_bytes,
    st.one_of(st.none(), st.sampled_from(["image/jpeg", "text/plain"]), header_text),
)


@FUZZ
@given(parts=st.lists(part, max_size=4))
def test_any_multipart_parts(
    client: FrontClient, parts: list[tuple[str, str | None, bytes, str | None]]
) -> None:
    fields: MultiDict[str, Any] = MultiDict()
    for name, filename, content, content_type in parts:
        if filename is None:
            fields.add(name, content.decode("latin-1"))
        else:
            fields.add(name, (io.BytesIO(content), filename, content_type))
    check_contract(client.post(URL, data=fields, content_type="multipart/form-data"))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children),
    max_leaves=12,
)
base64_text = st.one_of(
    st.text(max_size=200),
    st.text(st.sampled_from(string.ascii_letters + string.digits + "+/= \n")),
    st.builds(lambda data: base64.b64encode(data).decode(), hostile_bytes),
    st.builds(lambda data: base64.b64encode(data).decode().rstrip("="), hostile_bytes),
    st.builds(lambda data: "data:image/png;base64," + base64.b64encode(data).decode(), st.binary()),
)
json_documents = st.one_of(
    json_values,
    st.fixed_dictionaries({"image": base64_text}, optional={"id": json_values}),
    st.fixed_dictionaries({"image": json_values, "id": json_values}),
)


@FUZZ
@given(document=json_documents, double_encoded=st.booleans())
def test_any_json_document(client: FrontClient, document: Any, double_encoded: bool) -> None:
    payload = json.dumps(json.dumps(document) if double_encoded else document)
    check_contract(client.post(URL, data=payload, content_type="application/json"))


@FUZZ
@given(text=st.text(max_size=300))
def test_any_text_as_json(client: FrontClient, text: str) -> None:
    check_contract(client.post(URL, data=text.encode("utf-8"), content_type="application/json"))


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_every_seed_format_is_detected(client: FrontClient, seed: int) -> None:
    """The seeds themselves are real images in formats the service promises to read."""
    response = client.post(URL, data=SEEDS[seed], content_type="application/octet-stream")
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_get_405_in_the_error_shape(client: FrontClient, method: str) -> None:
    response = client.open(URL, method=method)
    assert response.status_code == 405
    check_contract(response)


def test_unknown_paths_get_404_in_the_error_shape(client: FrontClient) -> None:
    response = client.get("/../../etc/passwd")
    assert response.status_code == 404
    check_contract(response)


def test_photos_still_work(client: FrontClient, photos: list[Path]) -> None:
    with photos[0].open("rb") as handle:
        response = client.post(URL, data={"image": (handle, photos[0].name)})
    check_contract(response)
    assert response.get_json()["objects"]
