"""The types the inference layer and the service share, and the error for non-images.

Pure Python with no imports of ours, so the wire protocol, the agreement metric and every engine
can share them without importing OpenCV.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


class ImageDecodeError(ValueError):
    """The bytes are not an image that can be decoded."""


@dataclass(frozen=True)
class Detection:
    """One object: its COCO label, a confidence in [0, 1], and a box in image pixels."""

    label: str
    confidence: float
    left: int
    top: int
    width: int
    height: int
    class_id: int = field(default=-1, compare=False)  # index in the model's labels; -1 unknown


@dataclass(frozen=True)
class DetectionParams:
    """One request's choices; None everywhere means the detector's configured behaviour.

    ``confidence``: keep class scores strictly above this (0-1); ``nms``: IoU above which the
    weaker of two boxes of one class is dropped (0-1); ``classes``: keep only these labels (the
    model's own spelling); ``max_detections``: keep the most confident N; ``annotate``: also draw
    the boxes on a JPEG copy of the image (see ``iweblens.inference.annotate``); ``model``: the
    real model to run (None: the pool's default); ``relabel``: a view's label map (the model's
    label -> the answered label): other classes are dropped, and boxes that share an answered
    label are suppressed as one class.
    """

    confidence: float | None = None
    nms: float | None = None
    classes: frozenset[str] | None = None
    max_detections: int | None = None
    annotate: bool = False
    model: str | None = None
    relabel: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Inference:
    """What one image gave: detections, the decoded size, the drawn copy if asked, timings.

    ``width``/``height`` are the decoded image's, in the orientation the boxes refer to.
    Timings (seconds, measured by the pool) are not part of equality.
    """

    detections: list[Detection]
    width: int
    height: int
    annotated_jpeg: bytes | None = None
    queue_wait_s: float = field(default=0.0, compare=False)
    inference_s: float = field(default=0.0, compare=False)


@dataclass(frozen=True)
class ModelCard:
    """What answers come from: the model, its engine, weights, labels and score floor.

    ``score_floor``: the engine zeroes class scores at or below it, so no threshold below it can
    be honoured (a lower one behaves as this one).
    """

    name: str
    engine: str
    weights_sha256: str
    input_size: int
    labels: tuple[str, ...]
    score_floor: float
