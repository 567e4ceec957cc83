"""A corpus of nasty files, each with its stated outcome, sent in all three flavours to a server.

Files are made by the test from a real photograph, so the corpus needs nothing committed and each
one is exactly what its name says. Where a file still holds the photograph (16-bit, alpha, CMYK,
a polyglot) the expected outcome is the photograph's own detections, not merely a 200.
"""

from __future__ import annotations

import base64
import io
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import requests
from api_contract import check_answer
from PIL import Image
from support import TESTS_DIR, png_declaring

from iweblens.config import Settings

PHOTO = TESTS_DIR / "images" / "000000012807.jpg"  # elephants and people
FLAVOURS = ("multipart", "raw", "json")
SAME_AS_PHOTO = "photo"  # expected labels: those found in the untouched photograph


def photo_rgb() -> Image.Image:
    return Image.open(PHOTO).convert("RGB")


def saved(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_16_bit() -> bytes:
    pixels = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR).astype(np.uint16) * 257
    return cv2.imencode(".png", pixels)[1].tobytes()


def animated_gif() -> bytes:
    frames = [photo_rgb(), Image.new("RGB", (640, 480)), Image.new("RGB", (640, 480), "white")]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def a_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("readme.txt", "not an image")
    return buffer.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) claims ``width`` x ``height``, with no scan after it."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


@dataclass(frozen=True)
class Nasty:
    """A hostile file, what the service must answer, and why that is the right answer."""

    name: str
    make: Callable[[], bytes]
    status: int
    outcome: str | None  # the error code, or SAME_AS_PHOTO, or None (any objects)
    why: str


LIMIT_WIDTH, LIMIT_HEIGHT = 4000, 3000  # Settings().max_pixels is 4000 x 3000
CORPUS = [
    Nasty(
        "truncated-jpeg", lambda: PHOTO.read_bytes()[: PHOTO.stat().st_size // 2], 400,
        "invalid_image", "OpenCV and Pillow both refuse a JPEG that ends mid-scan: a half upload "
        "is refused, not half detected",
    ),
    Nasty(
        "truncated-png", lambda: saved(photo_rgb(), "PNG")[:20_000], 400, "invalid_image",
        "a PNG cut inside its image data has no decodable rows",
    ),
    Nasty(
        "png-declaring-50000x50000", lambda: png_declaring(50_000, 50_000), 413,
        "image_too_large", "refused from the header: 7.5 GB if decoded",
    ),
    Nasty(
        "png-one-pixel-over-the-limit", lambda: png_declaring(LIMIT_WIDTH + 1, LIMIT_HEIGHT), 413,
        "image_too_large", "the pixel limit is checked before decoding",
    ),
    Nasty(
        "jpeg-declaring-65000x65000", lambda: jpeg_declaring(65_000, 65_000), 413,
        "image_too_large", "the same check reads JPEG frame headers",
    ),
    Nasty(
        "png-16-bit", png_16_bit, 200, SAME_AS_PHOTO,
        "16-bit samples are scaled to 8 bits: the same photograph",
    ),
    Nasty(
        "grayscale-jpeg", lambda: saved(photo_rgb().convert("L"), "JPEG"), 200, None,
        "one channel is replicated to three; colour-free detections",
    ),
    Nasty(
        "cmyk-jpeg", lambda: saved(photo_rgb().convert("CMYK"), "JPEG", quality=95), 200,
        SAME_AS_PHOTO, "libjpeg converts CMYK to BGR: the same photograph",
    ),
    Nasty(
        "png-with-alpha", lambda: saved(photo_rgb().convert("RGBA"), "PNG"), 200, SAME_AS_PHOTO,
        "the alpha channel is dropped",
    ),
    Nasty(
        "animated-gif", animated_gif, 200, None,
        "the first frame is detected; later frames are ignored",
    ),
    Nasty(
        "one-by-one", lambda: saved(Image.new("RGB", (1, 1), "red"), "PNG"), 200, "no objects",
        "a valid image too small to hold anything",
    ),
    Nasty("zero-bytes", lambda: b"", 400, "empty_image", "nothing to decode"),
    Nasty("zip", a_zip, 400, "invalid_image", "not an image format at all"),
    Nasty(
        "polyglot-jpeg-zip", lambda: PHOTO.read_bytes() + a_zip(), 200, SAME_AS_PHOTO,
        "a valid JPEG with an archive after its end marker: the archive is never looked at",
    ),
    Nasty(
        "polyglot-gif-javascript", lambda: b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=alert(1);",
        400, "invalid_image", "a GIF header wrapped around script: no image data",
    ),
    Nasty(
        "svg-with-script",
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        400, "invalid_image", "vector formats are not decoded (no XML parser is reachable)",
    ),
    Nasty(
        "html", lambda: b"<html><body><img src=x onerror=alert(1)></body></html>", 400,
        "invalid_image", "text is not an image",
    ),
]  # fmt: skip


def send(url: str, flavour: str, data: bytes) -> requests.Response:
    endpoint = f"{url}/api/object_detection"
    if flavour == "multipart":
        return requests.post(endpoint, files={"image": ("upload", data)}, timeout=120)
    if flavour == "raw":
        headers = {"Content-Type": "application/octet-stream"}
        return requests.post(endpoint, data=data, headers=headers, timeout=120)
    document = {"id": "nasty", "image": base64.b64encode(data).decode()}
    return requests.post(endpoint, json=document, timeout=120)


@pytest.fixture(scope="module")
def photo_labels(live_server: str) -> set[str]:
    response = send(live_server, "multipart", PHOTO.read_bytes())
    return {obj["label"] for obj in response.json()["objects"]}


def test_the_corpus_covers_the_limit_it_probes() -> None:
    assert Settings().max_pixels == LIMIT_WIDTH * LIMIT_HEIGHT


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("nasty", CORPUS, ids=[nasty.name for nasty in CORPUS])
def test_nasty_file(live_server: str, photo_labels: set[str], nasty: Nasty, flavour: str) -> None:
    response = send(live_server, flavour, nasty.make())
    body = response.json()
    check_answer(response.status_code, response.headers, body)
    expected_code = nasty.outcome
    if nasty.name == "zero-bytes" and flavour == "json":
        expected_code = "missing_image"  # an empty base64 string is no image field at all
    assert response.status_code == nasty.status, (nasty.why, body)
    if nasty.status != 200:
        assert body["error"]["code"] == expected_code, nasty.why
    elif nasty.outcome == SAME_AS_PHOTO:
        assert {obj["label"] for obj in body["objects"]} == photo_labels, nasty.why
    elif nasty.outcome == "no objects":
        assert body["objects"] == []


def test_a_body_over_the_size_limit_is_refused_unread(live_server: str) -> None:
    oversized = b"\xff\xd8" + bytes(Settings().max_body_bytes)
    response = send(live_server, "raw", oversized)
    assert response.status_code == 413
    check_answer(response.status_code, response.headers, response.json())


def test_the_corpus_is_listed_in_the_reliability_report() -> None:
    report = (TESTS_DIR.parent / "docs" / "reliability.md").read_text()
    assert all(f"`{nasty.name}`" in report for nasty in CORPUS)
