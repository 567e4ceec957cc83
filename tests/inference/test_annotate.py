"""The annotated image: boxes drawn where the detections are, on a bounded copy."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from iweblens.detection import Detection, DetectionParams
from iweblens.inference.annotate import MAX_SIDE, annotate, colour_of, drawing_scale
from iweblens.inference.detector import Detector
from iweblens.inference.engines import create_engine
from iweblens.inference.pixels import decode_image
from iweblens.models.store import ModelPaths

# JPEG at quality 90 moves a saturated colour on a 3+ pixel line by a few tens at most.
TOLERANCE = 60
JPEG_90 = [cv2.IMWRITE_JPEG_QUALITY, 90]


def close_to(pixel: np.ndarray, colour: tuple[int, int, int]) -> bool:
    return int(np.abs(pixel.astype(int) - np.array(colour)).sum()) <= TOLERANCE


def edge_midpoints(d: Detection, scale: float) -> list[tuple[int, int]]:
    """(x, y) of the middle of the left, right and bottom edges in the drawn copy's pixels."""
    x0, y0 = round(d.left * scale), round(d.top * scale)
    x1, y1 = round((d.left + d.width) * scale), round((d.top + d.height) * scale)
    return [(x0, (y0 + y1) // 2), (x1, (y0 + y1) // 2), ((x0 + x1) // 2, y1)]


def assert_boxes_drawn(
    original: np.ndarray, drawn: np.ndarray, detections: list[Detection], scale: float
) -> None:
    """Every box shows its colour at an edge midpoint where the photo did not have it.

    One is enough: two nearly coincident boxes of other classes (a cup in a bowl) blend at the
    edges they share, JPEG's chroma subsampling averaging their colours over 2x2 pixels.
    """
    resized = cv2.resize(original, (drawn.shape[1], drawn.shape[0]), interpolation=cv2.INTER_AREA)
    for d in detections:
        colour = colour_of(d.class_id)
        shown = [
            (x, y)
            for x, y in edge_midpoints(d, scale)
            if close_to(drawn[min(y, drawn.shape[0] - 1), min(x, drawn.shape[1] - 1)], colour)
            and not close_to(
                resized[min(y, drawn.shape[0] - 1), min(x, drawn.shape[1] - 1)], colour
            )
        ]
        assert shown, f"{d.label} at {d.left},{d.top}: its box is not drawn"


@pytest.fixture(scope="module")
def detector(model_paths: ModelPaths) -> Detector:
    return Detector(create_engine("opencv", model_paths), model_paths.labels())


def test_boxes_are_drawn_where_the_detections_are(detector: Detector, photos: list[Path]) -> None:
    for photo in photos:
        data = photo.read_bytes()
        result = detector.run(data, DetectionParams(annotate=True))
        assert result.annotated_jpeg is not None
        drawn = cv2.imdecode(np.frombuffer(result.annotated_jpeg, np.uint8), cv2.IMREAD_COLOR)
        original = decode_image(data).pixels
        assert drawn.shape == original.shape, "photos under MAX_SIDE are drawn at their own size"
        assert_boxes_drawn(original, drawn, result.detections, 1.0)
        # Away from every box and its tag, the photo is as it was (JPEG's noise aside).
        baseline = cv2.imdecode(cv2.imencode(".jpg", original, JPEG_90)[1], cv2.IMREAD_COLOR)
        away = np.ones(original.shape[:2], bool)
        for d in result.detections:
            away[max(0, d.top - 40) : d.top + d.height + 20, max(0, d.left - 20) : d.left + 200] = (
                False
            )
            away[
                max(0, d.top - 20) : d.top + d.height + 20,
                max(0, d.left - 20) : d.left + d.width + 20,
            ] = False
        changed = np.abs(drawn.astype(int) - baseline.astype(int)).max(axis=2)[away] > 40
        assert changed.mean() < 0.01, photo.name


def test_a_large_image_is_drawn_on_a_bounded_copy(photos: list[Path]) -> None:
    original = cv2.resize(decode_image(photos[0].read_bytes()).pixels, (4096, 3072))
    box = Detection("dog", 0.9, 1000, 800, 2000, 1500, class_id=16)
    encoded = annotate(original, [box], MAX_SIDE)
    drawn = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    scale = drawing_scale(4096, 3072, MAX_SIDE)
    assert drawn.shape[:2] == (round(3072 * scale), MAX_SIDE)
    assert_boxes_drawn(original, drawn, [box], scale)
