import base64
import io
import json
import struct
import zlib

import pytest
from PIL import Image
from werkzeug.test import EnvironBuilder

from iweblens.detection import Detection
from iweblens.service.protocol import (
    ApiError,
    DetectionRequest,
    Flavour,
    check_image,
    parse_request,
    render_detections,
)

JPEG = b"\xff\xd8\xff\xe0 pretend jpeg"


def request_of(**kwargs):
    return EnvironBuilder(method="POST", path="/api/object_detection", **kwargs).get_request()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def expect_error(status: int, code: str, **kwargs) -> None:
    with pytest.raises(ApiError) as raised:
        parse_request(request_of(**kwargs))
    assert (raised.value.status, raised.value.code) == (status, code)


def test_multipart_part_named_image() -> None:
    parsed = parse_request(request_of(data={"image": (io.BytesIO(JPEG), "cat.jpg")}))
    assert parsed == DetectionRequest(JPEG, Flavour.MULTIPART)


def test_plain_json_with_id() -> None:
    body = {"id": "abc-1", "image": base64.b64encode(JPEG).decode()}
    parsed = parse_request(request_of(json=body))
    assert parsed == DetectionRequest(JPEG, Flavour.JSON, "abc-1")


def test_double_encoded_json_as_the_later_clients_send() -> None:
    body = json.dumps({"id": "u-5", "image": base64.b64encode(JPEG).decode()})
    parsed = parse_request(request_of(json=body))
    assert parsed == DetectionRequest(JPEG, Flavour.JSON, "u-5")


def test_base64_with_line_breaks_and_data_url_prefix() -> None:
    encoded = "data:image/jpeg;base64," + base64.encodebytes(JPEG * 10).decode()
    parsed = parse_request(request_of(json={"image": encoded}))
    assert parsed.image == JPEG * 10 and parsed.request_id is None


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "application/octet-stream"])
def test_raw_body(content_type: str) -> None:
    parsed = parse_request(request_of(data=JPEG, content_type=content_type))
    assert parsed == DetectionRequest(JPEG, Flavour.RAW)


def test_bad_requests_have_clear_codes() -> None:
    expect_error(400, "missing_image", data={"file": (io.BytesIO(JPEG), "a.jpg")})
    expect_error(400, "empty_image", data={"image": (io.BytesIO(b""), "a.jpg")})
    expect_error(400, "empty_image", data=b"", content_type="image/jpeg")
    expect_error(400, "malformed_json", data=b"{nope", content_type="application/json")
    expect_error(400, "malformed_json", json=[1, 2])
    expect_error(400, "missing_image", json={"id": "x"})
    expect_error(400, "missing_image", json={"image": 42})
    expect_error(400, "invalid_base64", json={"image": "***not base64***"})
    expect_error(400, "invalid_base64", json={"image": "===="})
    expect_error(400, "missing_image", json={"image": ""})
    expect_error(415, "unsupported_media_type", data=b"x=1", content_type="text/plain")
    expect_error(415, "unsupported_media_type", data=b"x")


def test_check_image_reads_only_the_header() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48)).save(buffer, format="PNG")
    header = check_image(buffer.getvalue(), max_pixels=10_000)
    assert (header.format, header.width, header.height) == ("PNG", 64, 48)


@pytest.mark.parametrize("size", [(50_000, 50_000), (20_000, 20_000), (101, 100)])
def test_images_declaring_too_many_pixels_are_refused(size: tuple[int, int]) -> None:
    with pytest.raises(ApiError) as raised:
        check_image(png_declaring(*size), max_pixels=10_000)
    assert (raised.value.status, raised.value.code) == (413, "image_too_large")


def test_non_images_are_refused_before_decoding() -> None:
    with pytest.raises(ApiError) as raised:
        check_image(b"PK\x03\x04 a zip file", max_pixels=10_000)
    assert (raised.value.status, raised.value.code) == (400, "invalid_image")


def test_render_shapes_per_flavour() -> None:
    detections = [Detection("cat", 0.89344, 193, 95, 162, 254)]
    multipart = render_detections(DetectionRequest(JPEG, Flavour.MULTIPART), detections)
    assert multipart == {
        "objects": [
            {
                "label": "cat",
                "accuracy": "89.34",
                "rectangle": {"left": 193, "top": 95, "width": 162, "height": 254},
            }
        ]
    }
    as_json = render_detections(DetectionRequest(JPEG, Flavour.JSON, "id-7"), detections)
    assert as_json["id"] == "id-7"
    assert as_json["objects"][0]["accuracy"] == 0.8934
    assert as_json["objects"][0]["rectangle"] == multipart["objects"][0]["rectangle"]
