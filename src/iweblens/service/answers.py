"""The answer of ``POST /api/object_detection`` once the image is detected, per the options.

No option: the flavour's own shape, byte for byte what it always was (``render_detections``).
``details``: that shape plus each object's ``class_id`` and the image size, timings, model and
applied thresholds. ``annotate``: a JPEG of the image with the boxes drawn.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Response, jsonify, request

from iweblens.config import Settings
from iweblens.detection import DetectionParams, Inference, ModelCard
from iweblens.models.repository import Served
from iweblens.service.context import STARTED_KEY, service_of
from iweblens.service.options import DetectionOptions
from iweblens.service.wire import DetectionRequest, render_detections


def answer(
    request: DetectionRequest,
    options: DetectionOptions,
    params: DetectionParams,
    inference: Inference,
    served: Served,
) -> Response:
    """The HTTP response for a detected image (JSON, or ``image/jpeg`` when annotated) by the
    model or view ``served``."""
    if options.annotate:
        response = Response(inference.annotated_jpeg, mimetype="image/jpeg")
        response.headers["Content-Disposition"] = 'inline; filename="annotated.jpg"'
        return response
    body = render_detections(request, inference.detections)
    if options.details:
        for shown, detection in zip(body["objects"], inference.detections, strict=True):
            shown["class_id"] = detection.class_id
        service = service_of()
        card = service.pool.models[served.model.name]
        body.update(details(options, params, inference, card, service.settings, elapsed_s()))
        body["model"]["name"] = served.name
        if served.relabel is not None:
            body["model"]["view_of"] = served.model.name
    return jsonify(body)


def details(
    options: DetectionOptions,
    params: DetectionParams,
    inference: Inference,
    model: ModelCard,
    settings: Settings,
    total_s: float,
) -> dict[str, Any]:
    """The detailed answer's extra members (see ``DetailedFields`` in openapi.json)."""
    asked = settings.confidence if options.min_confidence is None else options.min_confidence
    applied = max(asked, model.score_floor)
    notes = []
    if applied > asked:
        notes.append(
            f"min_confidence {asked:g} is below {model.score_floor:g}, the lowest score the "
            f"{model.engine} engine reports (it zeroes lower class scores): {applied:g} applied"
        )
    applied_options: dict[str, Any] = {
        "min_confidence": asked,
        "min_confidence_applied": applied,
        "score_floor": model.score_floor,
        "nms": settings.nms if params.nms is None else params.nms,
    }
    if params.classes is not None:
        # A view's classes are reported in its own labels, as asked.
        relabel = params.relabel or {}
        applied_options["classes"] = sorted({relabel.get(c, c) for c in params.classes})
    if params.max_detections is not None:
        applied_options["max_detections"] = params.max_detections
    return {
        "image": {"width": inference.width, "height": inference.height},
        "timings_ms": {
            "queue_wait": _ms(inference.queue_wait_s),
            "inference": _ms(inference.inference_s),
            "total": _ms(total_s),
        },
        "model": {
            "name": model.name,  # the real model's; a view's is set by ``answer``
            "engine": model.engine,
            "weights_sha256": model.weights_sha256,
            "input_size": model.input_size,
        },
        "options": applied_options,
        "notes": notes,
    }


def elapsed_s() -> float:
    """Seconds since the front handed this request to the app (0 for a request it did not)."""
    now = time.perf_counter()
    started: float = request.environ.get("asgi.scope", {}).get(STARTED_KEY, now)
    return now - started


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
