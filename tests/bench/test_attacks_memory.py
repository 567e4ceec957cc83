"""The memory attacks' inputs, checked against the decoders that read them (no pod: fast)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from werkzeug.wrappers import Request

from iweblens.bench.attacks.memory import maximal_body, maximal_image
from iweblens.bench.http_client import FLAVOURS

MAX_PIXELS = 2_000_000
BODY_LIMIT = 4 * 2**20


def image_of(flavour: str, data: bytes, content_type: str) -> bytes:
    """The image bytes a server reads out of a ``flavour`` body (Werkzeug for multipart)."""
    if flavour == "multipart":
        request = Request.from_values(
            input_stream=io.BytesIO(data),
            content_type=content_type,
            content_length=len(data),
            method="POST",
        )
        return request.files["image"].read()
    if flavour == "raw":
        return data
    document = json.loads(data)
    if flavour == "json-double":
        document = json.loads(document)
    return base64.b64decode(document["image"])


def test_the_maximal_image_is_at_the_pixel_limit(photos: list[Path]) -> None:
    with Image.open(io.BytesIO(maximal_image(photos[0], MAX_PIXELS))) as image:
        assert image.format == "JPEG"
        assert MAX_PIXELS * 0.999 <= image.width * image.height <= MAX_PIXELS
        assert image.width / image.height == pytest.approx(4 / 3, rel=0.01)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_maximal_body_fills_the_limit_and_its_image_still_decodes(
    flavour: str, photos: list[Path]
) -> None:
    jpeg = maximal_image(photos[0], MAX_PIXELS)
    body = maximal_body(flavour, jpeg, BODY_LIMIT)
    assert BODY_LIMIT - 64 <= len(body.data) <= BODY_LIMIT
    padded = image_of(flavour, body.data, body.content_type)
    assert padded.startswith(jpeg) and len(padded) > len(jpeg)
    with Image.open(io.BytesIO(padded)) as decoded, Image.open(io.BytesIO(jpeg)) as plain:
        assert decoded.tobytes() == plain.tobytes()


def test_an_image_larger_than_the_body_limit_is_refused(photos: list[Path]) -> None:
    jpeg = maximal_image(photos[0], MAX_PIXELS)
    with pytest.raises(ValueError, match="does not fit"):
        maximal_body("json", jpeg, len(jpeg))
