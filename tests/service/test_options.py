"""Per-request options on every request flavour, over real HTTP against a real server."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest
import requests
from api_contract import OPENAPI, schema
from werkzeug.test import EnvironBuilder

from iweblens.detection import ModelCard
from iweblens.inference.engines import SCORE_FLOOR
from iweblens.models.labels import coco_name
from iweblens.models.store import ModelPaths, pinned_sha256
from iweblens.service.errors import ApiError
from iweblens.service.options import (
    DetectionOptions,
    parse_options,
    query_lists,
    resolve_classes,
)
from iweblens.service.wire import parse_request

FLAVOURS = ("multipart", "json", "raw")
PHOTO = "000000473528.jpg"  # a dog, a frisbee, a car and three small people
NMS_PHOTO = "000000126160.jpg"  # cups in a bowl: 4, 7 and 10 objects at IoU 0, 0.45 and 1


def post(base_url: str, flavour: str, photo: Path, options: dict[str, Any]) -> requests.Response:
    """One detection request in ``flavour`` with ``options`` where that flavour carries them."""
    url = f"{base_url}/api/object_detection"
    data = photo.read_bytes()
    if flavour == "multipart":
        fields = [(name, str(v)) for name, value in options.items() for v in _listed(value)]
        return requests.post(url, files={"image": (photo.name, data)}, data=fields, timeout=120)
    if flavour == "json":
        document = {"id": "opt", "image": base64.b64encode(data).decode(), **options}
        return requests.post(url, json=document, timeout=120)
    params = [(name, str(v)) for name, value in options.items() for v in _listed(value)]
    headers = {"Content-Type": "image/jpeg"}
    return requests.post(url, data=data, params=params, headers=headers, timeout=120)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def objects(response: requests.Response) -> list[tuple[str, float, dict[str, int]]]:
    """Label, confidence (0-1) and box of each object, whatever the flavour's shape."""
    assert response.status_code == 200, response.text
    body = response.json()
    return [
        (o["label"], float(o["accuracy"]) / (1 if isinstance(o["accuracy"], float) else 100),
         o["rectangle"])
        for o in body["objects"]
    ]  # fmt: skip


@pytest.fixture(scope="module")
def photo(photos: list[Path]) -> Path:
    return next(p for p in photos if p.name == PHOTO)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_min_confidence_on_every_flavour(live_server: str, photo: Path, flavour: str) -> None:
    default = objects(post(live_server, flavour, photo, {}))
    same = objects(post(live_server, flavour, photo, {"min_confidence": 0.5}))
    assert same == default
    strict = objects(post(live_server, flavour, photo, {"min_confidence": 0.8}))
    assert strict == [o for o in default if o[1] > 0.8] and strict
    loose = objects(post(live_server, flavour, photo, {"min_confidence": 0.25}))
    assert len(loose) > len(default)
    assert all(o[1] > 0.25 for o in loose)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_classes_on_every_flavour(live_server: str, photo: Path, flavour: str) -> None:
    default = objects(post(live_server, flavour, photo, {}))
    repeated = objects(post(live_server, flavour, photo, {"classes": ["person", "dog"]}))
    assert repeated == [o for o in default if o[0] in {"person", "dog"}]
    comma = objects(post(live_server, flavour, photo, {"classes": "person, Dog"}))
    assert comma == repeated
    # COCO's spelling of a darknet label selects it; the answer keeps darknet's.
    street = objects(post(live_server, flavour, photo, {"classes": "car,airplane"}))
    assert street == [o for o in default if o[0] == "car"] and street


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_max_detections_and_nms_on_every_flavour(
    live_server: str, photos: list[Path], flavour: str
) -> None:
    plate = next(p for p in photos if p.name == NMS_PHOTO)
    loose = {"min_confidence": 0.25}
    default = objects(post(live_server, flavour, plate, loose))
    top = objects(post(live_server, flavour, plate, {**loose, "max_detections": 2}))
    assert top == default[:2]
    unsuppressed = objects(post(live_server, flavour, plate, {**loose, "nms": 1.0}))
    suppressed = objects(post(live_server, flavour, plate, {**loose, "nms": 0.0}))
    assert len(unsuppressed) > len(default) > len(suppressed)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_details_on_every_flavour(
    live_server: str, photo: Path, flavour: str, model_paths: ModelPaths
) -> None:
    plain = post(live_server, flavour, photo, {}).json()
    response = post(live_server, flavour, photo, {"details": "true" if flavour != "json" else True})
    body = response.json()
    name = "JsonDetailedResult" if flavour == "json" else "DetailedResult"
    jsonschema.validate(body, schema(name))
    assert [{k: v for k, v in o.items() if k != "class_id"} for o in body["objects"]] == (
        plain["objects"]
    )
    labels = model_paths.labels()
    assert all(labels[o["class_id"]] == o["label"] for o in body["objects"])
    height, width = cv2.imdecode(np.frombuffer(photo.read_bytes(), np.uint8), 1).shape[:2]
    assert body["image"] == {"width": width, "height": height}
    timings = body["timings_ms"]
    assert timings["queue_wait"] >= 0 and 0 < timings["inference"] <= timings["total"]
    assert body["model"] == {
        "name": "yolov3-tiny",
        "engine": "opencv",
        "weights_sha256": pinned_sha256("yolov3-tiny.weights"),
        "input_size": 416,
    }
    assert body["options"]["min_confidence_applied"] == 0.5
    assert body["notes"] == []


def test_a_threshold_below_the_floor_is_applied_as_the_floor_and_said(
    live_server: str, photo: Path
) -> None:
    at_floor = post(live_server, "json", photo, {"min_confidence": SCORE_FLOOR, "details": True})
    below = post(live_server, "json", photo, {"min_confidence": 0.05, "details": True}).json()
    assert below["objects"] == at_floor.json()["objects"]
    assert below["options"]["min_confidence"] == 0.05
    assert below["options"]["min_confidence_applied"] == SCORE_FLOOR
    assert below["options"]["score_floor"] == SCORE_FLOOR
    assert "below 0.2" in below["notes"][0]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_annotate_answers_a_jpeg_on_every_flavour(
    live_server: str, photo: Path, flavour: str
) -> None:
    response = post(live_server, flavour, photo, {"annotate": 1 if flavour != "json" else True})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/jpeg"
    drawn = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imdecode(np.frombuffer(photo.read_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == original.shape
    assert np.abs(drawn.astype(int) - original.astype(int)).max() > 100, "nothing was drawn"


BAD_OPTIONS = [
    ({"min_confidence": "high"}, "invalid_option", "min_confidence"),
    ({"min_confidence": 1.5}, "invalid_option", "from 0 to 1"),
    ({"min_confidence": -0.1}, "invalid_option", "from 0 to 1"),
    ({"min_confidence": "nan"}, "invalid_option", "min_confidence"),
    ({"nms": 2}, "invalid_option", "nms"),
    ({"max_detections": 0}, "invalid_option", "at least 1"),
    ({"max_detections": "2.5"}, "invalid_option", "whole number"),
    ({"classes": "person,unicorn"}, "unknown_class", "'unicorn'"),
    ({"classes": ","}, "invalid_option", "classes"),
    ({"details": "maybe"}, "invalid_option", "true or false"),
    ({"details": "1", "annotate": "1"}, "invalid_option", "exclude"),
]


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(("options", "code", "said"), BAD_OPTIONS)
def test_bad_options_are_clear_400s(
    live_server: str, photo: Path, flavour: str, options: dict, code: str, said: str
) -> None:
    response = post(live_server, flavour, photo, options)
    assert response.status_code == 400
    jsonschema.validate(response.json(), schema("Error"))
    assert response.json()["error"]["code"] == code
    assert said in response.json()["error"]["message"]


def test_unknown_classes_are_named_with_the_known_ones(live_server: str, photo: Path) -> None:
    message = post(live_server, "raw", photo, {"classes": "cats"}).json()["error"]["message"]
    assert "'cats'" in message
    assert "person" in message and "toothbrush" in message and "airplane" in message


def test_an_option_in_both_body_and_query_is_refused(live_server: str, photo: Path) -> None:
    response = requests.post(
        f"{live_server}/api/object_detection",
        params={"min_confidence": "0.3"},
        files={"image": (photo.name, photo.read_bytes())},
        data={"min_confidence": "0.3"},
        timeout=120,
    )
    assert response.status_code == 400
    assert "both in the body and in the query" in response.json()["error"]["message"]


def test_query_options_apply_to_every_flavour(live_server: str, photo: Path) -> None:
    response = requests.post(
        f"{live_server}/api/object_detection",
        params={"classes": "dog"},
        files={"image": (photo.name, photo.read_bytes())},
        timeout=120,
    )
    assert [o["label"] for o in response.json()["objects"]] == ["dog"]


# Parsing, without a server: the werkzeug request the app would see.


def options_of(**kwargs: Any) -> DetectionOptions:
    request = EnvironBuilder(method="POST", path="/api/object_detection", **kwargs).get_request()
    return parse_options(parse_request(request), query_lists(request.args))


JPEG = b"\xff\xd8\xff\xe0 pretend jpeg"


def test_parsing_each_flavour() -> None:
    multipart = {"image": (io.BytesIO(JPEG), "a.jpg"), "classes": ["dog", "cat"], "nms": "0.3"}
    assert options_of(data=multipart) == DetectionOptions(nms=0.3, classes=("dog", "cat"))
    document = {"image": base64.b64encode(JPEG).decode(), "classes": ["dog"], "details": True}
    assert options_of(json=document) == DetectionOptions(classes=("dog",), details=True)
    assert options_of(json=json.dumps({**document, "max_detections": 3})) == DetectionOptions(
        classes=("dog",), max_detections=3, details=True
    )
    raw = {"data": JPEG, "content_type": "image/jpeg", "query_string": "annotate=yes&nms=1"}
    assert options_of(**raw) == DetectionOptions(nms=1.0, annotate=True)
    assert options_of(data=JPEG, content_type="image/jpeg") == DetectionOptions()


@pytest.mark.parametrize(
    "document",
    [
        {"min_confidence": True},
        {"min_confidence": "0.5", "max_detections": 1.0},
        {"classes": [1, 2]},
        {"details": "sometimes"},
    ],
)
def test_json_values_of_the_wrong_type_are_refused(document: dict) -> None:
    with pytest.raises(ApiError) as raised:
        options_of(json={"image": base64.b64encode(JPEG).decode(), **document})
    assert (raised.value.status, raised.value.code) == (400, "invalid_option")


def test_a_scalar_option_given_twice_is_refused() -> None:
    with pytest.raises(ApiError, match="given 2 times"):
        options_of(data=JPEG, content_type="image/jpeg", query_string="nms=0.3&nms=0.4")


def test_classes_resolve_to_the_models_spelling() -> None:
    card = ModelCard(
        "yolov3-tiny", "opencv", "", 416, ("person", "aeroplane", "tvmonitor"), SCORE_FLOOR
    )
    assert resolve_classes(["Airplane", "TV", "person"], card.labels) == {
        "aeroplane",
        "tvmonitor",
        "person",
    }
    with pytest.raises(ApiError) as raised:
        resolve_classes(["plane"], card.labels)
    assert raised.value.code == "unknown_class"
    # A view answers COCO's spelling; darknet's names the same class.
    assert resolve_classes(["motorbike", "Motorcycle"], ("person", "motorcycle")) == {"motorcycle"}


def test_the_documented_labels_are_the_models(model_paths: ModelPaths) -> None:
    schemas = OPENAPI["components"]["schemas"]
    labels = model_paths.labels()
    assert schemas["Label"]["enum"] == labels
    assert schemas["CocoLabel"]["enum"] == [coco_name(label) for label in labels]
    assert set(schemas["ClassName"]["enum"]) == set(labels) | set(schemas["CocoLabel"]["enum"])


def json_options(options: str) -> DetectionOptions:
    """The options of a JSON body whose option members are the raw JSON ``options``."""
    body = f'{{"image": "{base64.b64encode(JPEG).decode()}", {options}}}'
    return options_of(data=body, content_type="application/json")


@pytest.mark.parametrize(
    "options",
    [
        '"min_confidence": ' + "9" * 400,  # an integer past the double range
        '"nms": -' + "9" * 400,
        '"max_detections": "\u00b2"',  # a digit to str.isdigit, not to int()
        '"max_detections": "\u2460"',
        '"max_detections": "' + "9" * 5000 + '"',  # past int()'s digit limit
    ],
)
def test_numbers_the_parsers_cannot_convert_are_invalid_options(options: str) -> None:
    """Found by tests/service/test_parsing_fuzz.py: each escaped as a 500 before."""
    with pytest.raises(ApiError) as raised:
        json_options(options)
    assert (raised.value.status, raised.value.code) == (400, "invalid_option")
