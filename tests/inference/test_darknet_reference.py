"""YOLOv4-tiny answers what AlexeyAB's darknet itself answers, through every float engine.

The reference is darknet's own ``detector test`` output on the reference photographs
(``tests/reference/darknet/``: how it was made, and the commit). Agreement is F1 as
``bench/agreement.py`` computes it (same label, IoU >= 0.5) at threshold 0.5.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import TESTS_DIR

from iweblens.bench.agreement import F1Tally, darknet_in_pixels, read_darknet_record
from iweblens.config import Settings
from iweblens.inference.detector import Detector
from iweblens.models.store import ModelPaths

RECORD = TESTS_DIR / "reference" / "darknet" / "yolov4-tiny.json"
ENGINES = ("opencv", "onnxruntime", "openvino")


def test_the_record_covers_the_committed_photos(photos: list[Path]) -> None:
    record = read_darknet_record(RECORD)
    assert len(record) == 128
    assert {photo.name for photo in photos} <= set(record)


def test_yolov4_tiny_asks_for_darknets_greedy_diou_suppression(
    yolov4_tiny_paths: ModelPaths,
) -> None:
    detector = Detector.from_settings(Settings(), yolov4_tiny_paths, "opencv")
    assert detector.nms_kind == "diou"


@pytest.mark.parametrize("engine", ENGINES)
def test_yolov4_tiny_agrees_with_darknet(
    engine: str, yolov4_tiny_paths: ModelPaths, coco128: list[Path]
) -> None:
    record = read_darknet_record(RECORD)
    detector = Detector.from_settings(Settings(), yolov4_tiny_paths, engine)
    tally = F1Tally()
    for photo in coco128:
        inference = detector.run(photo.read_bytes())
        expected = darknet_in_pixels(record[photo.name], inference.width, inference.height)
        tally.add(expected, inference.detections)
    assert tally.true_positives > 0
    assert tally.f1 >= 0.99, tally
