"""``POST /v1/vision/detection``: the DeepStack / CodeProject.AI object detection API.

Home Assistant (through PyPI ``deepstack-python``), Frigate, Blue Iris, Agent DVR and many scripts
speak it. What they send and read, from DeepStack's server and docs (johnolafenwa/DeepStack,
``server/`` and ``intelligencelayer/shared/detection.py``; deepstack-docs' object detection and
security pages), CodeProject.AI Server's SDK (``BackendResponseBase``) and ``deepstack-python``'s
``deepstack/core.py``:

* a multipart body: the file part ``image``, optional ``min_confidence`` (default 0.45) and
  ``api_key`` fields (``deepstack-python`` always sends both, the key empty by default);
* ``{"success": true, "predictions": [{"label", "confidence", "x_min", "y_min", "x_max",
  "y_max"}]}``, to which CodeProject.AI adds ``count``, ``message``, ``code``, ``command``,
  ``moduleId``, ``moduleName``, ``inferenceMs``, ``processMs``, ``analysisRoundTripMs``,
  ``processedBy`` and ``timestampUTC``: all of them are returned;
* errors as ``{"success": false, "error": "..."}`` with DeepStack's statuses: 400 "No valid image
  file found", 400 "invalid image file", 400 for a ``min_confidence`` that is not a number or is
  above 1, 401 "Incorrect api key", 500 otherwise; CodeProject.AI's ``code`` (the status) is
  added (``errors`` renders them, from its vocabulary). DeepStack's ``duration`` (never set by
  its server, so always 0) is not.

``POST /v1/vision/custom/<model>`` answers the same request with a named model or view (Blue
Iris, Home Assistant's ``custom_model``, ``deepstack-python``'s ``custom_model=``, Agent DVR);
as CodeProject.AI does, ``general`` or an empty name means ``ipcam-general`` and ``combined``
``ipcam-combined``. ``/v1/vision/custom/list`` (GET or POST) answers CodeProject.AI's listing,
``{"success": true, "models": [names]}``: the models and views this server serves.

Labels use COCO's spelling, which these clients configure their targets with (``airplane``,
``couch``, ``tv``...); the boxes and confidences are the native endpoint's at the same threshold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from email.utils import formatdate
from typing import Any

from flask import Blueprint, Response, jsonify, request

from iweblens.detection import DetectionParams, Inference
from iweblens.models.labels import coco_name
from iweblens.service.answers import elapsed_s
from iweblens.service.context import service_of
from iweblens.service.errors import DEEPSTACK_BLUEPRINT, NO_IMAGE, ApiError
from iweblens.service.models import served_model
from iweblens.service.options import parse_number

DEFAULT_MIN_CONFIDENCE = 0.45  # DeepStack's documented default, and deepstack-python's
MODULE_ID = "iweblens"

Detect = Callable[[bytes, DetectionParams], Inference]


DEEPSTACK_PATH = "/v1/vision/detection"
CUSTOM_PREFIX = "/v1/vision/custom/"
LIST_PATH = CUSTOM_PREFIX + "list"


def queues_inference(path: str) -> bool:
    """Whether a request to ``path`` queues an inference (a DeepStack detection route)."""
    return path in (DEEPSTACK_PATH, CUSTOM_PREFIX.rstrip("/")) or (
        path.startswith(CUSTOM_PREFIX) and path != LIST_PATH
    )


def deepstack_blueprint(detect: Detect) -> Blueprint:
    """The endpoints, detecting through ``detect`` (the service's one detection path)."""
    blueprint = Blueprint(DEEPSTACK_BLUEPRINT, __name__)

    @blueprint.post(DEEPSTACK_PATH)
    def detection() -> Response:
        return _answer(detect, None, "detect")

    # Werkzeug redirects ``/v1/vision/custom`` and ``custom//x`` with an HTML page: a client of
    # a JSON API gets JSON (the first is the empty name, the second names no model).
    @blueprint.post(CUSTOM_PREFIX, defaults={"model": ""}, strict_slashes=False)
    @blueprint.post(CUSTOM_PREFIX + "<path:model>", merge_slashes=False)
    def custom(model: str) -> Response:
        return _answer(detect, model, "custom")

    @blueprint.route(LIST_PATH, methods=["GET", "POST"])
    def listing() -> Response:
        names = list(service_of().models.served())
        return jsonify({"success": True, "models": names, "code": 200, "command": "list"})

    return blueprint


def _answer(detect: Detect, model: str | None, command: str) -> Response:
    served = served_model(model, deepstack=True) if model is not None else None
    upload = request.files.get("image")
    image = upload.read() if upload is not None else b""
    if not image:
        raise ApiError(400, "missing_image", NO_IMAGE)
    given = request.form.getlist("min_confidence")
    if len(given) > 1:
        raise ApiError(400, "invalid_option", "min_confidence was given more than once")
    confidence = min_confidence(given[0] if given else None)
    params = DetectionParams(confidence=confidence)
    if served is not None:
        params = replace(params, model=served.model.name, relabel=served.relabel)
    inference = detect(image, params)
    shown = service_of().models.default if served is None else served.name
    name = module_name_of(shown)
    return jsonify(render(inference, elapsed_s(), command=command, module_name=name))


def min_confidence(text: str | None) -> float:
    """DeepStack's rules: absent or empty is 0.45, above 1 or not a number is a 400.

    Anything lower than the engine's floor, even negative, is accepted (DeepStack accepts it too)
    and behaves as the floor.
    """
    if text is None or text == "":
        return DEFAULT_MIN_CONFIDENCE
    value = parse_number(text)
    if value is None:
        raise ApiError(400, "invalid_option", "Invalid value for min_confidence")
    if value > 1.0:
        raise ApiError(400, "invalid_option", "min_confidence cannot be greater than 1")
    return value


def module_name_of(model: str) -> str:
    """CodeProject.AI's ``moduleName`` of the answers of ``model`` (a model's or view's name)."""
    return f"iWebLens object detection ({model})"


def render(
    inference: Inference,
    total_s: float,
    *,
    module_name: str,
    command: str = "detect",
) -> dict[str, Any]:
    """The success answer, most confident first (DeepStack and CodeProject.AI fields).

    ``command``: CodeProject.AI's name of the route (``detect``, or ``custom`` for a named
    model); ``module_name``: the model that answered, in words.
    """
    predictions = [
        {
            "label": coco_name(d.label),
            "confidence": round(d.confidence, 4),
            "x_min": d.left,
            "y_min": d.top,
            "x_max": d.left + d.width,
            "y_max": d.top + d.height,
        }
        for d in inference.detections
    ]
    labels = [str(p["label"]) for p in predictions]
    found = sorted(set(labels), key=labels.index)
    inference_ms = round(inference.inference_s * 1000)
    return {
        "success": True,
        "predictions": predictions,
        "count": len(predictions),
        "message": f"Found {', '.join(found)}" if found else "No objects found",
        "code": 200,
        "command": command,
        "moduleId": MODULE_ID,
        "moduleName": module_name,
        "inferenceMs": inference_ms,
        "processMs": round((inference.queue_wait_s + inference.inference_s) * 1000),
        "analysisRoundTripMs": round(total_s * 1000),
        "processedBy": service_of().settings.served_by,
        "timestampUTC": formatdate(usegmt=True),
    }
