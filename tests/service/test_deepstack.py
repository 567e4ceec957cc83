"""``POST /v1/vision/detection`` through the client Home Assistant's DeepStack integration uses.

PyPI ``deepstack-python`` is used unchanged: ``DeepstackObject(...).detect(image_bytes)`` posts the
image with its ``api_key`` and ``min_confidence`` fields and returns the ``predictions`` list.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from api_contract import schema
from support import API_KEYS, deepstack_client, unstarted_front

from iweblens.config import Settings
from iweblens.detection import Detection, Inference
from iweblens.inference.engines import SCORE_FLOOR
from iweblens.models.labels import coco_name
from iweblens.service.app import create_app
from iweblens.service.deepstack import render

deepstack = pytest.importorskip("deepstack.core", reason="deepstack-python is in the dev extra")

DEEPSTACK_DEFAULT = 0.45


def native(
    base_url: str, photo: Path, min_confidence: float, key: str | None = None
) -> list[dict[str, Any]]:
    """iWebLens's own JSON answer at ``min_confidence``, in DeepStack's terms."""
    document = {"image": base64.b64encode(photo.read_bytes()).decode()}
    response = requests.post(
        f"{base_url}/api/object_detection",
        json={**document, "min_confidence": min_confidence},
        headers={"X-API-Key": key} if key else {},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return [
        {
            "label": coco_name(o["label"]),
            "confidence": o["accuracy"],
            "x_min": o["rectangle"]["left"],
            "y_min": o["rectangle"]["top"],
            "x_max": o["rectangle"]["left"] + o["rectangle"]["width"],
            "y_max": o["rectangle"]["top"] + o["rectangle"]["height"],
        }
        for o in response.json()["objects"]
    ]


def detection(base_url: str, **kwargs: Any) -> requests.Response:
    return requests.post(f"{base_url}/v1/vision/detection", timeout=120, **kwargs)


def test_deepstack_python_gets_the_native_answer_at_its_default_threshold(
    live_server: str, photos: list[Path]
) -> None:
    found = set()
    for photo in photos:
        predictions = deepstack_client(live_server, DEEPSTACK_DEFAULT).detect(photo.read_bytes())
        assert predictions == native(live_server, photo, DEEPSTACK_DEFAULT), photo.name
        found |= {p["label"] for p in predictions}
    assert {"person", "dog", "bus", "elephant"} <= found


@pytest.mark.parametrize("min_confidence", [0.8, 0.3, 0.5])
def test_deepstack_python_min_confidence_is_honoured(
    live_server: str, photos: list[Path], min_confidence: float
) -> None:
    for photo in photos:
        predictions = deepstack_client(live_server, min_confidence).detect(photo.read_bytes())
        assert all(p["confidence"] > min_confidence for p in predictions)
        assert predictions == native(live_server, photo, min_confidence), photo.name


def test_a_threshold_below_the_floor_is_the_floor_never_a_400(
    live_server: str, photos: list[Path]
) -> None:
    photo = photos[-1]
    at_floor = deepstack_client(live_server, SCORE_FLOOR).detect(photo.read_bytes())
    assert any(p["confidence"] < 0.3 for p in at_floor)
    for below in (0.1, 0.0, -1.0):
        assert deepstack_client(live_server, below).detect(photo.read_bytes()) == at_floor


def test_answer_has_the_fields_deepstack_and_codeproject_clients_read(
    live_server: str, photos: list[Path]
) -> None:
    photo = next(p for p in photos if p.name == "000000473528.jpg")
    response = detection(live_server, files={"image": photo.read_bytes()})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    jsonschema.validate(body, schema("DeepStackResult"))
    assert body["success"] is True and body["code"] == 200
    assert body["count"] == len(body["predictions"]) > 0
    assert body["message"].startswith("Found dog")
    assert body["processedBy"] == "test-server"
    assert body["inferenceMs"] <= body["processMs"] <= body["analysisRoundTripMs"] + 1
    confidences = [p["confidence"] for p in body["predictions"]]
    assert confidences == sorted(confidences, reverse=True)


def test_labels_are_cocos_spelling(photos: list[Path]) -> None:
    app = create_app(unstarted_front(Settings()).service)
    darknet = ("diningtable", "tvmonitor", "sofa", "aeroplane", "motorbike", "pottedplant", "dog")
    inference = Inference([Detection(name, 0.9, 1, 2, 3, 4) for name in darknet], 640, 480)
    with app.test_request_context():
        body = render(inference, 0.1, module_name="iWebLens object detection (yolov3-tiny)")
    jsonschema.validate(body, schema("DeepStackResult"))
    assert [p["label"] for p in body["predictions"]] == [
        "dining table", "tv", "couch", "airplane", "motorcycle", "potted plant", "dog"
    ]  # fmt: skip
    assert body["predictions"][0] == {
        "label": "dining table", "confidence": 0.9, "x_min": 1, "y_min": 2, "x_max": 4, "y_max": 6
    }  # fmt: skip


def deepstack_error(response: requests.Response, status: int, message: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    jsonschema.validate(body, schema("DeepStackError"))
    assert body == {"success": False, "error": message, "code": status}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"files": {"file": b"\xff\xd8"}}, "No valid image file found"),
        ({"files": {"image": b""}}, "No valid image file found"),
        (
            {"data": b"\xff\xd8", "headers": {"Content-Type": "image/jpeg"}},
            "No valid image file found",
        ),
        ({"files": {"image": b"hello world"}}, "invalid image file"),
    ],
)
def test_image_errors_in_deepstacks_shape(live_server: str, kwargs: dict, message: str) -> None:
    deepstack_error(detection(live_server, **kwargs), 400, message)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("high", "Invalid value for min_confidence"),
        ("1.5", "min_confidence cannot be greater than 1"),
    ],
)
def test_min_confidence_errors_in_deepstacks_shape(
    live_server: str, photos: list[Path], value: str, message: str
) -> None:
    response = detection(
        live_server, files={"image": photos[0].read_bytes()}, data={"min_confidence": value}
    )
    deepstack_error(response, 400, message)
    with pytest.raises(deepstack.DeepstackException, match="status code: 400"):
        deepstack_client(live_server, float(value) if value != "high" else 2.0).detect(
            photos[0].read_bytes()
        )


def test_min_confidence_given_twice_is_refused(live_server: str, photos: list[Path]) -> None:
    response = detection(
        live_server,
        files={"image": photos[0].read_bytes()},
        data={"min_confidence": ["0.3", "0.9"]},
    )
    deepstack_error(response, 400, "min_confidence was given more than once")


def test_any_key_is_ignored_when_none_is_configured(live_server: str, photos: list[Path]) -> None:
    predictions = deepstack_client(live_server, 0.5, api_key="whatever").detect(
        photos[0].read_bytes()
    )
    assert predictions == native(live_server, photos[0], 0.5)


def test_keys_are_enforced_for_deepstack_clients(keyed_server: str, photos: list[Path]) -> None:
    image = photos[0].read_bytes()
    for key in API_KEYS:
        predictions = deepstack_client(keyed_server, 0.5, api_key=key).detect(image)
        assert predictions == native(keyed_server, photos[0], 0.5, key)
    for wrong in ("", "not-a-key", API_KEYS[0] + "x"):
        with pytest.raises(deepstack.DeepstackException, match="status code: 401"):
            deepstack_client(keyed_server, 0.5, api_key=wrong).detect(image)
    response = detection(keyed_server, files={"image": image}, data={"api_key": "nope"})
    deepstack_error(response, 401, "Incorrect api key")
    bearer = {"Authorization": f"Bearer {API_KEYS[1]}"}
    assert detection(keyed_server, files={"image": image}, headers=bearer).status_code == 200
