"""Naming a model: DeepStack's custom routes and listing, the native ``model`` option, the model
listing ``GET /api/models``, and a user's own models folder served end to end.

``deepstack-python`` is used unchanged: ``DeepstackObject(..., custom_model=name)`` posts to
``/v1/vision/custom/<name>``, as Home Assistant's DeepStack integration does.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import requests
from api_contract import schema
from cutdown import cut_down
from support import API_KEYS, ServerProcess, deepstack_client, serving

from iweblens.models.store import ModelPaths, pinned_sha256

deepstack = pytest.importorskip("deepstack.core", reason="deepstack-python is in the dev extra")

BUNDLED_VIEWS = ["ipcam-general", "ipcam-combined", "ipcam-animal", "ipcam-dark"]
VEHICLES = frozenset({"bicycle", "bus", "car", "motorcycle", "truck"})
LOW = 0.25
# A bus the full model also scores as a truck, on the same box, above LOW.
OVERLAPPING = "000000028124.jpg"
IOU = 0.45  # the service's NMS threshold
CUT = "dogs-people-cars"
KEPT = ("dog", "person", "car")
VIEW = "t\u00fcr kamera"  # a view named as a user may: not ASCII, with a space


def iou(a: dict[str, int], b: dict[str, int]) -> float:
    width = min(a["x_max"], b["x_max"]) - max(a["x_min"], b["x_min"])
    height = min(a["y_max"], b["y_max"]) - max(a["y_min"], b["y_min"])
    inter = max(width, 0) * max(height, 0)
    areas = [(p["x_max"] - p["x_min"]) * (p["y_max"] - p["y_min"]) for p in (a, b)]
    return inter / (sum(areas) - inter) if inter else 0.0


def box(prediction: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(prediction[k] for k in ("confidence", "x_min", "y_min", "x_max", "y_max"))


def test_deepstack_python_custom_model_answers_person_and_one_box_per_vehicle(
    live_server: str, photos: list[Path]
) -> None:
    merged = 0
    for photo in photos:
        image = photo.read_bytes()
        plain = deepstack_client(live_server, LOW).detect(image)
        viewed = deepstack_client(live_server, LOW, "ipcam-general").detect(image)
        assert {p["label"] for p in viewed} <= {"person", "vehicle"}, photo.name
        people = [p for p in viewed if p["label"] == "person"]
        assert people == [p for p in plain if p["label"] == "person"], photo.name
        vehicles = [p for p in viewed if p["label"] == "vehicle"]
        kept = [box(p) for p in vehicles]
        assert all(iou(a, b) <= IOU for i, a in enumerate(vehicles) for b in vehicles[i + 1 :])
        candidates = [p for p in plain if p["label"] in VEHICLES]
        assert set(kept) <= {box(p) for p in candidates}, photo.name
        for dropped in (p for p in candidates if box(p) not in kept):
            assert any(
                iou(dropped, v) > IOU and v["confidence"] >= dropped["confidence"] for v in vehicles
            ), (photo.name, dropped)
        merged += len(candidates) - len(kept)
        if photo.name == OVERLAPPING:
            assert any(
                iou(a, b) > IOU and a["label"] != b["label"]
                for i, a in enumerate(candidates)
                for b in candidates[i + 1 :]
            )
    assert merged > 0


def test_deepstack_python_aliases_answer_as_the_views(live_server: str, photos: list[Path]) -> None:
    image = next(p for p in photos if p.name == OVERLAPPING).read_bytes()
    assert deepstack_client(live_server, LOW, "general").detect(image) == deepstack_client(
        live_server, LOW, "ipcam-general"
    ).detect(image)
    combined = deepstack_client(live_server, LOW, "combined").detect(image)
    assert combined == deepstack_client(live_server, LOW, "ipcam-combined").detect(image)
    # ipcam-combined keeps the classes apart: the bus scored as a truck is both.
    assert {p["label"] for p in combined} == {"bus", "car", "truck"}


def deepstack_error(response: requests.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    jsonschema.validate(body, schema("DeepStackError"))
    assert body == {"success": False, "error": message, "code": status}


def served_names(base_url: str) -> list[str]:
    """What ``/v1/vision/custom/list`` names, the same to GET, POST and POST with an image."""
    answers = [
        requests.get(f"{base_url}/v1/vision/custom/list", timeout=30),
        requests.post(f"{base_url}/v1/vision/custom/list", timeout=30),
        requests.post(f"{base_url}/v1/vision/custom/list", files={"image": b"x"}, timeout=30),
    ]
    bodies = [answer.json() for answer in answers if answer.status_code == 200]
    assert len(bodies) == len(answers) and all(body == bodies[0] for body in bodies)
    assert {k: v for k, v in bodies[0].items() if k != "models"} == {
        "success": True,
        "code": 200,
        "command": "list",
    }
    names: list[str] = bodies[0]["models"]
    return names


def test_the_custom_list_names_every_served_model_and_view(live_server: str) -> None:
    assert served_names(live_server) == ["yolov3-tiny", *BUNDLED_VIEWS]


KNOWN = "yolov3-tiny, yolov4-tiny, " + ", ".join(BUNDLED_VIEWS)


@pytest.mark.parametrize("name", ["nope", "list/x", "ipcam-general/", "YOLOV3-TINY"])
def test_an_unknown_custom_model_is_a_404_in_deepstacks_shape(
    live_server: str, photos: list[Path], name: str
) -> None:
    url = f"{live_server}/v1/vision/custom/{name}"
    response = requests.post(url, files={"image": photos[0].read_bytes()}, timeout=30)
    deepstack_error(response, 404, f"unknown model {name!r}; the models are {KNOWN}")
    with pytest.raises(deepstack.DeepstackException, match="raised error 404"):
        deepstack_client(live_server, LOW, name).detect(photos[0].read_bytes())


def test_a_custom_model_not_loaded_is_a_404_naming_iweblens_models(
    live_server: str, photos: list[Path]
) -> None:
    url = f"{live_server}/v1/vision/custom/yolov4-tiny"
    response = requests.post(url, files={"image": photos[0].read_bytes()}, timeout=30)
    deepstack_error(
        response,
        404,
        "model 'yolov4-tiny' is not loaded on this server (IWEBLENS_MODELS=yolov3-tiny); add it "
        "to IWEBLENS_MODELS to serve it",
    )


def native(base_url: str, photo: Path, flavour: str, **options: Any) -> requests.Response:
    """``POST /api/object_detection`` with ``options`` as multipart fields, query parameters or
    members of a JSON body."""
    url = f"{base_url}/api/object_detection"
    image = photo.read_bytes()
    if flavour == "json":
        document = {"image": base64.b64encode(image).decode(), **options}
        return requests.post(url, json=document, timeout=120)
    if flavour == "query":
        return requests.post(url, files={"image": image}, params=options, timeout=120)
    return requests.post(url, files={"image": image}, data=options, timeout=120)


def native_error(response: requests.Response, code: str, message: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    jsonschema.validate(body, schema("Error"))
    assert body == {"error": {"code": code, "message": message}}


FLAVOURS = ["multipart", "query", "json"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_the_native_model_option_refuses_unknown_and_unloaded_models(
    live_server: str, photos: list[Path], flavour: str
) -> None:
    for name in ("nope", "", "list", "../detection", "\u6a21\u578b"):
        native_error(
            native(live_server, photos[0], flavour, model=name),
            "unknown_model",
            f"unknown model {name!r}; the models are {KNOWN}",
        )
    native_error(
        native(live_server, photos[0], flavour, model="yolov4-tiny"),
        "model_not_loaded",
        "model 'yolov4-tiny' is not loaded on this server (IWEBLENS_MODELS=yolov3-tiny); add it "
        "to IWEBLENS_MODELS to serve it",
    )


def test_the_native_model_option_must_be_one_name(live_server: str, photos: list[Path]) -> None:
    for value in (3, 3.5, True, ["ipcam-general"], {"name": "ipcam-general"}):
        response = native(live_server, photos[0], "json", model=value)
        native_error(
            response, "invalid_option", f"model must be a model's name (text), not {value!r}"
        )
    twice = native(live_server, photos[0], "multipart", model=["yolov3-tiny", "ipcam-general"])
    native_error(twice, "invalid_option", "model is given 2 times; give it once")
    both = requests.post(
        f"{live_server}/api/object_detection?model=general",
        files={"image": photos[0].read_bytes()},
        data={"model": "general"},
        timeout=30,
    )
    native_error(both, "invalid_option", "model given both in the body and in the query string")


@pytest.mark.parametrize(
    ("asked", "name", "view_of", "labels"),
    [
        ("ipcam-general", "ipcam-general", "yolov3-tiny", ("person", "vehicle")),
        ("general", "ipcam-general", "yolov3-tiny", ("person", "vehicle")),
        ("yolov3-tiny", "yolov3-tiny", None, None),
    ],
)
def test_details_name_the_model_that_answered(
    live_server: str,
    photos: list[Path],
    model_paths: ModelPaths,
    asked: str,
    name: str,
    view_of: str | None,
    labels: tuple[str, ...] | None,
) -> None:
    photo = next(p for p in photos if p.name == OVERLAPPING)
    body = native(live_server, photo, "multipart", model=asked, details="true").json()
    jsonschema.validate(body, schema("DetailedResult"))
    identity = {
        "name": name,
        "engine": "opencv",
        "weights_sha256": pinned_sha256("yolov3-tiny.weights"),
        "input_size": 416,
    }
    if view_of is not None:
        identity["view_of"] = view_of
    assert body["model"] == identity
    answered = labels or tuple(model_paths.labels())
    assert body["objects"] and all(answered[o["class_id"]] == o["label"] for o in body["objects"])


def test_classes_of_a_view_are_its_own_labels(live_server: str, photos: list[Path]) -> None:
    photo = next(p for p in photos if p.name == OVERLAPPING)
    everything = native(live_server, photo, "multipart", model="ipcam-general").json()["objects"]
    only = native(live_server, photo, "query", model="ipcam-general", classes="vehicle").json()
    assert only["objects"] == [o for o in everything if o["label"] == "vehicle"] != []
    refused = native(live_server, photo, "multipart", model="ipcam-general", classes="car")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "unknown_class"
    assert "the model knows person, vehicle" in refused.json()["error"]["message"]


def test_the_custom_route_needs_a_key_as_the_detection_route_does(
    keyed_server: str, photos: list[Path]
) -> None:
    image = photos[0].read_bytes()
    for key in API_KEYS:
        predictions = deepstack_client(keyed_server, LOW, "ipcam-general", api_key=key).detect(
            image
        )
        assert {p["label"] for p in predictions} <= {"person", "vehicle"}
    for wrong in ("", "not-a-key"):
        with pytest.raises(deepstack.DeepstackException, match="status code: 401"):
            deepstack_client(keyed_server, LOW, "ipcam-general", api_key=wrong).detect(image)
    for name in ("ipcam-general", "nope"):
        response = requests.post(
            f"{keyed_server}/v1/vision/custom/{name}", files={"image": image}, timeout=30
        )
        deepstack_error(response, 401, "Incorrect api key")


def model_entry(listing: dict[str, Any], name: str) -> dict[str, Any]:
    entry: dict[str, Any] = next(m for m in listing["models"] if m["name"] == name)
    return entry


def test_api_models_lists_kinds_labels_loading_and_hashes(
    live_server: str, model_paths: ModelPaths
) -> None:
    listing = requests.get(f"{live_server}/api/models", timeout=30).json()
    assert [m["name"] for m in listing["models"]] == ["yolov3-tiny", "yolov4-tiny", *BUNDLED_VIEWS]
    assert listing["default"] == "yolov3-tiny"
    aliases = {"(empty)": "ipcam-general", "general": "ipcam-general", "combined": "ipcam-combined"}
    assert listing["aliases"] == aliases
    v3 = model_entry(listing, "yolov3-tiny")
    assert (v3["kind"], v3["loaded"], v3["default"]) == ("darknet", True, True)
    assert v3["labels"] == model_paths.labels()
    assert (v3["input_size"], v3["engine"]) == (416, "opencv")
    assert v3["files"] == [
        {"name": name, "sha256": pinned_sha256(name)}
        for name in ("yolov3-tiny.cfg", "yolov3-tiny.weights", "coco.names")
    ]
    v4 = model_entry(listing, "yolov4-tiny")
    assert (v4["kind"], v4["loaded"], v4["default"]) == ("darknet", False, False)
    assert [f["name"] for f in v4["files"]] == [
        "yolov4-tiny.cfg",
        "yolov4-tiny.weights",
        "coco.names",
    ]
    general = model_entry(listing, "ipcam-general")
    assert general["kind"] == "view" and general["loaded"] is True
    assert (general["base"], general["labels"]) == ("yolov3-tiny", ["person", "vehicle"])
    assert "COCO stand-in" in general["note"]


# --- hostile names and paths ---


def raw_post(base_url: str, path: str, image: bytes) -> tuple[int, str, Any]:
    """POST ``path`` byte for byte (no client normalises it): status, content type, JSON body."""
    address = urlparse(base_url)
    prepared = requests.Request("POST", base_url, files={"image": image}).prepare()
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=60)
    try:
        connection.request("POST", path, body=prepared.body, headers=dict(prepared.headers))
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), json.loads(response.read())
    finally:
        connection.close()


HOSTILE_PATHS = {
    "/v1/vision/custom/../detection": "../detection",
    "/v1/vision/custom/%2e%2e/detection": "../detection",
    "/v1/vision/custom/./ipcam-general": "./ipcam-general",
    "/v1/vision/custom/list/x": "list/x",
    "/v1/vision/custom/list/": "list/",
    "/v1/vision/custom/ipcam-general/": "ipcam-general/",
    "/v1/vision/custom/ipcam-general%2F": "ipcam-general/",
    "/v1/vision/custom/%E6%A8%A1%E5%9E%8B": "\u6a21\u578b",
    "/v1/vision/custom/%FF": "\ufffd",
    "/v1/vision/custom/%00": "\x00",
    "/v1/vision/custom/ipcam-general%20": "ipcam-general ",
    "/v1/vision/custom/" + "x" * 8000: "x" * 8000,
}


@pytest.mark.parametrize("path", HOSTILE_PATHS, ids=lambda path: path[18:40] or "empty")
def test_a_hostile_custom_path_is_a_clean_404_naming_the_model(
    live_server: str, photos: list[Path], path: str
) -> None:
    status, content_type, body = raw_post(live_server, path, photos[0].read_bytes())
    assert (status, content_type) == (404, "application/json")
    message = f"unknown model {HOSTILE_PATHS[path]!r}; the models are {KNOWN}"
    assert body == {"success": False, "error": message, "code": 404}


def test_a_bare_custom_route_is_the_empty_name_and_a_doubled_slash_no_route(
    live_server: str, photos: list[Path]
) -> None:
    image = next(p for p in photos if p.name == OVERLAPPING).read_bytes()
    general = raw_post(live_server, "/v1/vision/custom/ipcam-general", image)[2]["predictions"]
    for path in ("/v1/vision/custom", "/v1/vision/custom/"):
        status, content_type, body = raw_post(live_server, path, image)
        assert (status, content_type, body["predictions"]) == (200, "application/json", general)
    status, content_type, body = raw_post(live_server, "/v1/vision/custom//ipcam-general", image)
    # Under /v1/vision/ every refusal is in DeepStack's shape, a routing one too.
    assert (status, content_type, body["success"], body["code"]) == (
        404,
        "application/json",
        False,
        404,
    )


# --- a user's models folder, end to end ---


@pytest.fixture(scope="module")
def user_models(model_paths: ModelPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder: YOLOv3-tiny cut down to ``KEPT``, and a view over it."""
    folder = tmp_path_factory.mktemp("models")
    cut_down(model_paths, KEPT, folder / CUT)
    (folder / VIEW).mkdir()
    (folder / VIEW / "model.toml").write_text(
        f'base = "{CUT}"\n[labels]\nvisitor = ["person", "dog"]\n'
    )
    return folder


@pytest.fixture(scope="module")
def user_server(user_models: Path) -> Iterator[ServerProcess]:
    env = {"IWEBLENS_CUSTOM_MODELS_DIR": str(user_models), "IWEBLENS_MODELS": f"yolov3-tiny,{CUT}"}
    with serving(env) as server:
        yield server


def objects(response: requests.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["objects"]
    return found


def test_a_cut_down_user_model_finds_what_the_full_one_finds_of_its_classes(
    user_server: ServerProcess, photos: list[Path], coco128: list[Path]
) -> None:
    def both(photo: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        cut = objects(native(user_server.url, photo, "multipart", model=CUT))
        full = native(user_server.url, photo, "query", model="yolov3-tiny", classes=",".join(KEPT))
        return cut, objects(full)

    found = 0
    with ThreadPoolExecutor(2) as pool:
        for photo, (cut, full) in zip(
            everything := sorted(set(photos) | set(coco128)),
            pool.map(both, everything),
            strict=True,
        ):
            assert cut == full, photo.name
            found += len(full)
    assert found > 0


def test_a_cut_down_user_model_on_the_custom_route(
    user_server: ServerProcess, photos: list[Path]
) -> None:
    for photo in photos:
        image = photo.read_bytes()
        full = deepstack_client(user_server.url, 0.45).detect(image)
        cut = deepstack_client(user_server.url, 0.45, CUT).detect(image)
        assert cut == [p for p in full if p["label"] in KEPT], photo.name


def test_a_users_view_over_a_users_model(user_server: ServerProcess, photos: list[Path]) -> None:
    photo = next(p for p in photos if p.name == "000000473528.jpg")
    cut = objects(native(user_server.url, photo, "multipart", model=CUT))
    body = native(user_server.url, photo, "json", model=VIEW, details=True).json()
    assert [o["label"] for o in body["objects"]] == ["visitor"] * len(body["objects"])
    assert len(body["objects"]) == len([o for o in cut if o["label"] in ("dog", "person")]) > 0
    assert body["model"]["name"] == VIEW and body["model"]["view_of"] == CUT
    predictions = deepstack_client(user_server.url, 0.5, VIEW).detect(photo.read_bytes())
    assert [(p["label"], p["x_min"], p["y_min"]) for p in predictions] == [
        (o["label"], o["rectangle"]["left"], o["rectangle"]["top"]) for o in body["objects"]
    ]
    assert served_names(user_server.url) == ["yolov3-tiny", CUT, *BUNDLED_VIEWS, VIEW]


def test_api_models_lists_a_users_models(user_server: ServerProcess, user_models: Path) -> None:
    listing = requests.get(f"{user_server.url}/api/models", timeout=30).json()
    names = [m["name"] for m in listing["models"]]
    assert names == ["yolov3-tiny", "yolov4-tiny", *BUNDLED_VIEWS, CUT, VIEW]
    cut = model_entry(listing, CUT)
    assert (cut["kind"], cut["loaded"], cut["default"]) == ("darknet", True, False)
    assert (cut["labels"], cut["input_size"], cut["engine"]) == (list(KEPT), 416, "opencv")
    files = sorted((user_models / CUT).iterdir())
    assert sorted(cut["files"], key=lambda f: f["name"]) == [
        {"name": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        for path in files
    ]
    view = model_entry(listing, VIEW)
    assert (view["kind"], view["loaded"], view["base"]) == ("view", True, CUT)
    assert view["labels"] == ["visitor"] and "note" not in view


# --- another default model ---


@pytest.fixture(scope="module")
def yolov4_first(yolov4_tiny_paths: ModelPaths) -> Iterator[ServerProcess]:
    with serving({"IWEBLENS_MODELS": "yolov4-tiny,yolov3-tiny"}) as server:
        yield server


def test_the_first_of_iweblens_models_answers_when_no_model_is_named(
    yolov4_first: ServerProcess, photos: list[Path]
) -> None:
    url = yolov4_first.url
    photo = next(p for p in photos if p.name == "000000473528.jpg")
    image = {"image": photo.read_bytes()}
    plain = requests.post(f"{url}/v1/vision/detection", files=image, timeout=120)
    named = requests.post(f"{url}/v1/vision/custom/yolov4-tiny", files=image, timeout=120)
    assert plain.json()["predictions"] == named.json()["predictions"] != []
    assert plain.json()["moduleName"] == "iWebLens object detection (yolov4-tiny)"
    assert plain.json()["command"] == "detect" and named.json()["command"] == "custom"
    other = requests.post(f"{url}/v1/vision/custom/yolov3-tiny", files=image, timeout=120)
    assert other.json()["moduleName"] == "iWebLens object detection (yolov3-tiny)"
    assert other.json()["predictions"] != plain.json()["predictions"]
    details = native(url, photo, "multipart", details="true").json()["model"]
    assert details["name"] == "yolov4-tiny"
    assert details["weights_sha256"] == pinned_sha256("yolov4-tiny.weights")
    viewed = native(url, photo, "json", model="general", details=True).json()
    assert viewed["model"]["view_of"] == "yolov4-tiny"
    assert served_names(url) == ["yolov4-tiny", "yolov3-tiny", *BUNDLED_VIEWS]
