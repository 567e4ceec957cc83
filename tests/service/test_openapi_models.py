"""The model repository's routes as the OpenAPI document describes them: real answers of
``GET /api/models``, the DeepStack custom-model routes and the native ``model`` option, each
checked against the schema the document gives for its status."""

from __future__ import annotations

import base64
from typing import Any

import jsonschema
import pytest
import requests
import schemathesis
from api_contract import OPENAPI, check_documented
from support import API_KEYS, IMAGES_DIR, heic_header

from iweblens.models.repository import DEFAULT_MODEL

PHOTO = IMAGES_DIR / "000000473528.jpg"  # a car, people, a dog and a frisbee
VIEW = "ipcam-general"
VIEW_LABELS = {"person", "vehicle"}
NOT_LOADED = "yolov4-tiny"  # known to every server, loaded only when IWEBLENS_MODELS names it
CUSTOM = "/v1/vision/custom/{model}"
NATIVE = "/api/object_detection"
FLAVOURS = ["multipart", "json", "query"]  # where the native model option travels


def custom(base_url: str, model: str, **kwargs: Any) -> requests.Response:
    return requests.post(f"{base_url}/v1/vision/custom/{model}", timeout=120, **kwargs)


def photo_part() -> dict[str, tuple[str, bytes]]:
    return {"image": (PHOTO.name, PHOTO.read_bytes())}


def native_with_model(base_url: str, flavour: str, model: str, **options: Any) -> requests.Response:
    """``POST /api/object_detection`` of the photo naming ``model`` as ``flavour`` carries it."""
    url = f"{base_url}{NATIVE}"
    fields = {"model": model, **options}
    if flavour == "multipart":
        return requests.post(url, files=photo_part(), data=fields, timeout=120)
    if flavour == "json":
        document = {"image": base64.b64encode(PHOTO.read_bytes()).decode(), **fields}
        return requests.post(url, json=document, timeout=120)
    headers = {"Content-Type": "image/jpeg"}
    return requests.post(url, data=PHOTO.read_bytes(), params=fields, headers=headers, timeout=120)


def test_the_document_is_valid_openapi() -> None:
    schemathesis.openapi.from_dict(OPENAPI).validate()


def test_the_model_listing_is_documented(live_server: str) -> None:
    response = requests.get(f"{live_server}/api/models", timeout=30)
    listing = response.json()
    check_documented("GET", "/api/models", response.status_code, listing)
    models = {model["name"]: model for model in listing["models"]}
    default = models[listing["default"]]
    assert listing["default"] == DEFAULT_MODEL
    assert default["kind"] == "darknet" and default["loaded"] and default["default"]
    # The documented Label enum stays the default model's labels.
    assert default["labels"] == OPENAPI["components"]["schemas"]["Label"]["enum"]
    assert models[NOT_LOADED]["loaded"] is False
    view = models[VIEW]
    assert view["kind"] == "view" and view["loaded"] and view["base"] == listing["default"]
    assert set(view["labels"]) == VIEW_LABELS
    assert listing["aliases"]["general"] == VIEW


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_the_deepstack_listing_is_documented(live_server: str, method: str) -> None:
    response = requests.request(method, f"{live_server}/v1/vision/custom/list", timeout=30)
    body = response.json()
    check_documented(method, "/v1/vision/custom/list", response.status_code, body)
    listing = requests.get(f"{live_server}/api/models", timeout=30).json()
    served = {model["name"] for model in listing["models"] if model["loaded"]}
    assert body["models"][0] == listing["default"]
    assert set(body["models"]) == served


def test_a_view_answers_its_own_labels_on_the_custom_route(live_server: str) -> None:
    response = custom(live_server, VIEW, files=photo_part())
    body = response.json()
    check_documented("POST", CUSTOM, response.status_code, body)
    assert response.status_code == 200
    assert body["command"] == "custom" and VIEW in body["moduleName"]
    assert {p["label"] for p in body["predictions"]} == VIEW_LABELS
    native = native_with_model(live_server, "multipart", VIEW, min_confidence="0.45")
    native_objects = native.json()["objects"]
    assert [p["label"] for p in body["predictions"]] == [o["label"] for o in native_objects]


@pytest.mark.parametrize("alias", ["general", ""])
def test_the_aliases_name_the_view(live_server: str, alias: str) -> None:
    named = custom(live_server, VIEW, files=photo_part()).json()["predictions"]
    response = custom(live_server, alias, files=photo_part())
    check_documented("POST", CUSTOM, response.status_code, response.json())
    assert response.json()["predictions"] == named


@pytest.mark.parametrize(
    ("model", "part", "content", "data", "status"),
    [
        ("no-such-model", "image", PHOTO.read_bytes(), {}, 404),
        (NOT_LOADED, "image", PHOTO.read_bytes(), {}, 404),
        (VIEW, "file", PHOTO.read_bytes(), {}, 400),
        (VIEW, "image", b"shopping list", {}, 400),
        (VIEW, "image", PHOTO.read_bytes(), {"min_confidence": "2"}, 400),
        (VIEW, "image", heic_header(), {}, 415),
    ],
    ids=["unknown", "not-loaded", "no-image", "not-an-image", "bad-threshold", "heic"],
)
def test_custom_route_errors_are_documented(
    live_server: str, model: str, part: str, content: bytes, data: dict[str, str], status: int
) -> None:
    response = custom(live_server, model, files={part: ("upload", content)}, data=data)
    body = response.json()
    check_documented("POST", CUSTOM, response.status_code, body)
    assert (response.status_code, body["code"], body["success"]) == (status, status, False)
    if status == 404:
        assert model in body["error"]


def test_a_name_no_route_reads_is_a_documented_404(live_server: str) -> None:
    """Found by schemathesis: the route's path converter reads no line break past the first
    character."""
    response = custom(live_server, "line\nbreak", files=photo_part())
    check_documented("POST", CUSTOM, response.status_code, response.json())
    assert response.status_code == 404


def test_the_custom_route_asks_for_the_key(keyed_server: str) -> None:
    response = custom(keyed_server, VIEW, files=photo_part(), data={"api_key": "wrong"})
    check_documented("POST", CUSTOM, response.status_code, response.json())
    assert response.status_code == 401 and "WWW-Authenticate" in response.headers
    bearer = {"Authorization": f"Bearer {API_KEYS[0]}"}
    assert custom(keyed_server, VIEW, files=photo_part(), headers=bearer).status_code == 200


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("details", [False, True])
def test_the_model_option_is_documented_in_every_flavour(
    live_server: str, flavour: str, details: bool
) -> None:
    options = {"details": True if flavour == "json" else "true"} if details else {}
    response = native_with_model(live_server, flavour, VIEW, **options)
    body = response.json()
    check_documented("POST", NATIVE, response.status_code, body)
    assert {o["label"] for o in body["objects"]} == VIEW_LABELS
    if details:
        assert (body["model"]["name"], body["model"]["view_of"]) == (VIEW, DEFAULT_MODEL)


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(
    ("model", "code"), [("no-such-model", "unknown_model"), (NOT_LOADED, "model_not_loaded")]
)
def test_model_option_errors_are_documented(
    live_server: str, flavour: str, model: str, code: str
) -> None:
    response = native_with_model(live_server, flavour, model)
    body = response.json()
    check_documented("POST", NATIVE, response.status_code, body)
    assert (response.status_code, body["error"]["code"]) == (400, code)


def test_a_class_of_the_view_is_a_valid_class(live_server: str) -> None:
    response = native_with_model(live_server, "multipart", VIEW, classes="vehicle", details="true")
    body = response.json()
    check_documented("POST", NATIVE, response.status_code, body)
    assert {o["label"] for o in body["objects"]} == {"vehicle"}
    refused = native_with_model(live_server, "multipart", VIEW, classes="car")
    check_documented("POST", NATIVE, refused.status_code, refused.json())
    assert refused.json()["error"]["code"] == "unknown_class"


def test_the_check_refuses_what_the_document_does_not_say() -> None:
    with pytest.raises(AssertionError, match="does not document 404"):
        check_documented("POST", NATIVE, 404, {"error": {"code": "not_found", "message": "x"}})
    with pytest.raises(jsonschema.ValidationError):
        check_documented("POST", CUSTOM, 200, {"success": True, "predictions": "none"})
