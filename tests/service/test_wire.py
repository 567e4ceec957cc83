import base64
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from support import png_declaring
from werkzeug.test import EnvironBuilder

from iweblens.detection import Detection
from iweblens.inference.images import ImageLimits
from iweblens.service.wire import (
    MAX_JSON_DEPTH,
    MAX_JSON_VALUES,
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
    header = check_image(buffer.getvalue(), ImageLimits(max_pixels=10_000))
    assert (header.format, header.width, header.height) == ("PNG", 64, 48)


@pytest.mark.parametrize("size", [(50_000, 50_000), (20_000, 20_000), (101, 100)])
def test_images_declaring_too_many_pixels_are_refused(size: tuple[int, int]) -> None:
    with pytest.raises(ApiError) as raised:
        check_image(png_declaring(*size), ImageLimits(max_pixels=10_000))
    assert (raised.value.status, raised.value.code) == (413, "image_too_large")


def test_non_images_are_refused_before_decoding() -> None:
    with pytest.raises(ApiError) as raised:
        check_image(b"PK\x03\x04 a zip file", ImageLimits(max_pixels=10_000))
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


# ----------------------------------------------------------------------------- multipart, checked


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    """A multipart body of (name, filename or None for a text field, content) parts."""
    chunks = []
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        chunks.append(
            f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


def parse_multipart(body: bytes, content_type: str = "multipart/form-data; boundary=b0undary"):
    return parse_request(request_of(data=body, content_type=content_type))


def refused(body: bytes, content_type: str = "multipart/form-data; boundary=b0undary"):
    with pytest.raises(ApiError) as raised:
        parse_multipart(body, content_type)
    return raised.value


def test_multipart_without_boundary_says_so() -> None:
    """What requests sends when a user sets the Content-Type header by hand."""
    error = refused(multipart([("image", "a.jpg", JPEG)]), "multipart/form-data")
    assert (error.status, error.code) == (400, "missing_boundary")
    assert "boundary" in error.message and "no file part" not in error.message


def test_two_image_files_are_one_image_too_many() -> None:
    error = refused(multipart([("image", "a.jpg", JPEG), ("image", "b.jpg", JPEG + b"2")]))
    assert (error.status, error.code) == (400, "multiple_images")
    assert error.message.startswith("one image per request")


def test_a_text_field_named_image_is_refused_precisely() -> None:
    error = refused(multipart([("image", None, base64.b64encode(JPEG))]))
    assert (error.status, error.code) == (400, "image_not_a_file")
    assert "text field" in error.message and "file part" in error.message


def test_other_parts_are_ignored_as_deepstack_clients_send_them() -> None:
    body = multipart(
        [
            ("api_key", None, b"secret"),
            ("min_confidence", None, b"0.4"),
            ("image", "cat.jpg", JPEG),
            ("thumbnail", "small.jpg", b"other file"),
        ]
    )
    assert parse_multipart(body) == DetectionRequest(JPEG, Flavour.MULTIPART)


# ----------------------------------------------------------------------------- JSON, strictly


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        ("application/json; charset=utf-8", "utf-8"),
        ("application/json; charset=UTF-8", "utf-8"),
        ("application/json;charset=utf-16", "utf-16"),
    ],
)
def test_a_charset_on_the_json_content_type_works(content_type: str, encoding: str) -> None:
    body = json.dumps({"id": "c-1", "image": base64.b64encode(JPEG).decode()}).encode(encoding)
    parsed = parse_request(request_of(data=body, content_type=content_type))
    assert parsed == DetectionRequest(JPEG, Flavour.JSON, "c-1")


IMAGE_B64 = base64.b64encode(JPEG).decode()


@pytest.mark.parametrize(
    "body",
    [
        f'{{"id": 1e400, "image": "{IMAGE_B64}"}}',
        f'{{"id": -1e999, "image": "{IMAGE_B64}"}}',
        f'{{"id": NaN, "image": "{IMAGE_B64}"}}',
        f'{{"id": -Infinity, "image": "{IMAGE_B64}"}}',
        f'{{"id": "x", "image": "{IMAGE_B64}", "options": {{"min_confidence": [1e400]}}}}',
        json.dumps(f'{{"id": 1e400, "image": "{IMAGE_B64}"}}'),  # double-encoded
    ],
)
def test_non_finite_numbers_anywhere_are_refused(body: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_request(request_of(data=body, content_type="application/json"))
    assert (raised.value.status, raised.value.code) == (400, "non_finite_number")
    assert "not finite" in raised.value.message
    # The refusal itself is strict JSON.
    strict_json(json.dumps(raised.value.body(), allow_nan=False))


def strict_json(text: str):
    def refuse(literal: str) -> None:
        raise AssertionError(f"non-standard JSON: {literal}")

    return json.loads(text, parse_constant=refuse)


def test_finite_ids_are_echoed_as_strict_json() -> None:
    from flask import Flask

    from iweblens.service.wire import StrictJSONProvider

    provider = StrictJSONProvider(Flask(__name__))
    for raw_id in ("1e308", "-0.0", "123456789012345678901234567890", '"1e400"'):
        body = f'{{"id": {raw_id}, "image": "{IMAGE_B64}"}}'
        parsed = parse_request(request_of(data=body, content_type="application/json"))
        answer = strict_json(provider.dumps(render_detections(parsed, [])))
        assert answer["id"] == json.loads(raw_id)
    with pytest.raises(ValueError):
        provider.dumps({"id": float("inf")})


@pytest.mark.parametrize(
    "encoded",
    [
        base64.b64encode(JPEG * 3 + b"\xfb\xff").decode().rstrip("="),  # no padding
        base64.urlsafe_b64encode(JPEG * 3 + b"\xfb\xff").decode(),  # URL-safe
        base64.urlsafe_b64encode(JPEG * 3 + b"\xfb\xff").decode().rstrip("="),  # both
        " ".join(base64.b64encode(JPEG * 3 + b"\xfb\xff").decode()),  # spaced out
    ],
)
def test_unpadded_and_url_safe_base64_are_accepted(encoded: str) -> None:
    assert "-" in base64.urlsafe_b64encode(b"\xfb\xff").decode()
    parsed = parse_request(request_of(json={"image": encoded}))
    assert parsed.image == JPEG * 3 + b"\xfb\xff"


@pytest.mark.parametrize(
    ("encoded", "detail"),
    [
        ("abc%def", "'%' at position 3"),
        ("abcde", "stray character"),
        ("ab=cd", "padding inside"),
        ("====", "only padding"),
    ],
)
def test_invalid_base64_says_what_is_wrong(encoded: str, detail: str) -> None:
    with pytest.raises(ApiError) as raised:
        parse_request(request_of(json={"image": encoded}))
    assert raised.value.code == "invalid_base64" and detail in raised.value.message


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=1, max_size=64), spelling=st.sampled_from(range(4)))
def test_base64_decodes_as_the_standard_library_does_on_every_path(
    data: bytes, spelling: int
) -> None:
    # Strict standard base64 takes the one-pass path; the other spellings are normalised first.
    encoded = [
        base64.b64encode(data).decode(),
        base64.urlsafe_b64encode(data).decode().rstrip("="),
        "data:image/jpeg;base64," + base64.encodebytes(data).decode(),
        base64.b64encode(data).decode() + "\n",
    ][spelling]
    assert parse_request(request_of(json={"image": encoded})).image == data


def json_request(member: str, *, double: bool = False):
    """``{"id", "image", "extra": <member>}`` (``member`` raw JSON), once or twice encoded."""
    document = f'{{"id": "j-1", "image": "{IMAGE_B64}", "extra": {member}}}'
    body = json.dumps(document) if double else document
    return request_of(data=body, content_type="application/json")


def json_refusal(request) -> ApiError:
    with pytest.raises(ApiError) as raised:
        parse_request(request)
    return raised.value


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize(
    "member",
    ["[" * 1000 + "]" * 1000, "[" * 100_000 + "]" * 100_000, '{"a":' * 1000 + "0" + "}" * 1000],
)
def test_json_nested_a_thousand_deep_anywhere_is_a_400(member: str, double: bool) -> None:
    refusal = json_refusal(json_request(member, double=double))
    assert (refusal.status, refusal.code) == (400, "json_too_complex")
    assert "deep" in refusal.message


def test_json_nested_deep_inside_the_id_is_a_400() -> None:
    body = f'{{"id": {"[" * 5000}{"]" * 5000}, "image": "{IMAGE_B64}"}}'
    refusal = json_refusal(request_of(data=body, content_type="application/json"))
    assert (refusal.status, refusal.code) == (400, "json_too_complex")


def test_json_depth_limit_is_exact() -> None:
    # The top-level object is one level; the member adds the rest.
    inner = MAX_JSON_DEPTH - 1
    parsed = parse_request(json_request("[" * inner + "]" * inner))
    assert parsed.image == JPEG
    refusal = json_refusal(json_request("[" * (inner + 1) + "]" * (inner + 1)))
    assert (refusal.status, refusal.code) == (400, "json_too_complex")


def test_json_value_limit_is_exact() -> None:
    # The object, five strings (three keys, two values), two commas and the array count nine;
    # each element after the first, its comma.
    elements = MAX_JSON_VALUES - 8
    assert parse_request(json_request("[" + ",".join("0" * elements) + "]")).image == JPEG
    refusal = json_refusal(json_request("[" + ",".join("0" * (elements + 1)) + "]"))
    assert (refusal.status, refusal.code) == (400, "json_too_complex")
    assert "values" in refusal.message


def test_many_tiny_nested_arrays_are_refused_without_building_them() -> None:
    """2 MiB of ``[[[]]],``: today's parser would build 0.9 M lists (~60 MB); the refusal builds
    nothing the size of the body (the decoded text is the one body-sized object)."""
    import tracemalloc

    groups = 2 * 2**20 // 7
    request = json_request("[" + ",".join(["[[[]]]"] * groups) + "]")
    body_bytes = len(request.get_data())
    tracemalloc.start()
    try:
        refusal = json_refusal(request)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (refusal.status, refusal.code) == (400, "json_too_complex")
    assert peak < 2 * body_bytes, f"peak {peak} bytes for a {body_bytes}-byte body"


@pytest.mark.parametrize(
    "member",
    [
        json.dumps("[" * 100_000 + "{" * 100_000),  # brackets inside a string are text
        json.dumps('\\",[{' * 20_000),  # escaped quotes and backslashes do not end the string
        json.dumps(["a,b"] * 100),
    ],
)
def test_brackets_and_commas_inside_strings_do_not_count(member: str) -> None:
    parsed = parse_request(json_request(member))
    assert parsed.fields["extra"] == json.loads(member)


@pytest.mark.parametrize(
    "body",
    [
        '{"id": "' + '\\"' * 100_000,  # unterminated, every quote escaped: no quadratic rescans
        '{"id": "x", "image": "' + IMAGE_B64 + '", "extra": ["' + "[" * 50_000,
        '{"id": "x"' + ", " * 10,
    ],
)
def test_malformed_json_is_still_malformed_json(body: str) -> None:
    refusal = json_refusal(request_of(data=body, content_type="application/json"))
    assert (refusal.status, refusal.code) == (400, "malformed_json")


def test_a_multipart_body_of_many_tiny_parts_is_refused_by_werkzeugs_own_limit() -> None:
    """The multipart counterpart of the JSON bounds: Werkzeug's ``max_form_parts`` (1,000),
    a 413 before the parts are built, through the request class the app uses."""
    from werkzeug.exceptions import RequestEntityTooLarge

    from iweblens.service.app import BufferedRequest

    def body(fields: int) -> bytes:
        image = b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        parts = b"".join(
            b'--x\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i
            for i in range(fields)
        )
        return image + JPEG + b"\r\n" + parts + b"--x--\r\n"

    def parsed(fields: int) -> DetectionRequest:
        environ = EnvironBuilder(
            method="POST", data=body(fields), content_type="multipart/form-data; boundary=x"
        ).get_environ()
        return parse_request(BufferedRequest(environ))

    assert parsed(998).image == JPEG
    with pytest.raises(RequestEntityTooLarge):
        parsed(5000)
