"""The ONNX conversion and the faster engines: same rows and same detections as OpenCV's, for
YOLOv3-tiny and for YOLOv4-tiny."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from iweblens.bench.agreement import differences
from iweblens.inference.detector import Detector
from iweblens.inference.engines import ENGINES, SCORE_FLOOR, create_engine
from iweblens.inference.letterbox import letterbox
from iweblens.inference.pixels import decode_image
from iweblens.models.darknet import parse_cfg
from iweblens.models.onnx_export import (
    CONVERTER_VERSION,
    ensure_onnx,
    graph_input_size,
    onnx_path,
)
from iweblens.models.store import ModelPaths

FLOAT_ENGINES = ("onnxruntime", "openvino")


@pytest.fixture(scope="module")
def converted(model_paths: ModelPaths) -> Path:
    return ensure_onnx(model_paths)


@pytest.fixture(scope="module")
def opencv_detections(model_paths: ModelPaths, photos: list[Path]) -> list[list]:
    detector = Detector(create_engine("opencv", model_paths), model_paths.labels())
    return [detector.detect_bytes(photo.read_bytes()) for photo in photos]


def test_cfg_parser_reads_sections_in_order(model_paths: ModelPaths) -> None:
    sections = parse_cfg(model_paths.cfg.read_text())
    kinds = [section.kind for section in sections]
    assert kinds[0] == "net"
    assert kinds.count("convolutional") == 13
    assert kinds.count("yolo") == 2
    assert sections[0].integer("width", 0) == 416


def test_conversion_is_cached_with_its_provenance(model_paths: ModelPaths, converted: Path) -> None:
    assert converted == onnx_path(model_paths)
    sidecar = json.loads(converted.with_name(converted.name + ".json").read_text())
    assert sidecar["converter_version"] == CONVERTER_VERSION
    assert sidecar["weights_sha256"] == (
        "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"
    )
    before = converted.stat().st_mtime_ns
    assert ensure_onnx(model_paths).stat().st_mtime_ns == before


def test_stale_conversion_is_rebuilt(tmp_path: Path, model_paths: ModelPaths) -> None:
    for source in (model_paths.cfg, model_paths.weights, model_paths.names):
        (tmp_path / source.name).symlink_to(source)
    copy = ModelPaths(
        cfg=tmp_path / model_paths.cfg.name,
        weights=tmp_path / model_paths.weights.name,
        names=tmp_path / model_paths.names.name,
    )
    target = ensure_onnx(copy)
    sidecar = target.with_name(target.name + ".json")
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "converter_version": CONVERTER_VERSION - 1}))
    target.write_bytes(b"stale")
    assert ensure_onnx(copy).stat().st_size > 30_000_000
    assert json.loads(sidecar.read_text()) == record


@pytest.mark.parametrize("engine", FLOAT_ENGINES)
def test_engine_rows_match_opencv(
    engine: str, model_paths: ModelPaths, photos: list[Path], converted: Path
) -> None:
    blob, _ = letterbox(decode_image(photos[0].read_bytes()).pixels, 416)
    expected = create_engine("opencv", model_paths).forward(blob)
    actual = create_engine(engine, model_paths).forward(blob)
    assert actual.shape == expected.shape == (2535, 85)
    np.testing.assert_allclose(actual, expected, atol=1e-4)


@pytest.mark.parametrize("engine", FLOAT_ENGINES)
def test_engine_detections_are_identical_to_opencv(
    engine: str,
    model_paths: ModelPaths,
    photos: list[Path],
    opencv_detections: list[list],
    converted: Path,
) -> None:
    detector = Detector(create_engine(engine, model_paths), model_paths.labels())
    assert sum(map(len, opencv_detections)) > len(photos)  # the photos do contain objects
    for photo, expected in zip(photos, opencv_detections, strict=True):
        assert differences(expected, detector.detect_bytes(photo.read_bytes())) == [], photo.name


def test_every_engine_is_registered() -> None:
    assert {"opencv", *FLOAT_ENGINES, "openvino-int8"} <= set(ENGINES)


def test_opencv_engine_needs_none_of_the_engines_extra() -> None:
    # The runtime image installs only the base dependencies: importing the engine registry must
    # not pull in onnx, onnxruntime or openvino.
    blocked = "import sys; sys.modules.update(onnx=None, onnxruntime=None, openvino=None); "
    code = blocked + "import iweblens.inference.engines as e; print(sorted(e.ENGINES))"
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert "opencv" in output


@pytest.mark.parametrize("engine", ["opencv", *FLOAT_ENGINES])
def test_every_engine_zeroes_class_scores_at_or_below_the_floor(
    model_paths: ModelPaths, photos: list[Path], engine: str
) -> None:
    network = create_engine(engine, model_paths)
    scores = np.concatenate(
        [
            network.forward(letterbox(decode_image(p.read_bytes()).pixels, 416)[0])[:, 5:]
            for p in photos
        ]
    )
    reported = scores[scores > 0]
    assert reported.min() > SCORE_FLOOR
    # ...and reports scores just above it, so the floor is the engine's, not the photos'.
    assert reported.min() < SCORE_FLOOR + 0.02


def test_opencv_takes_its_floor_from_the_yolo_layers_thresh(
    model_paths: ModelPaths, photos: list[Path]
) -> None:
    cfg = model_paths.cfg.read_text().replace("[yolo]", "[yolo]\nthresh=0.05")
    network = cv2.dnn.readNetFromDarknet(
        np.frombuffer(cfg.encode(), np.uint8), np.fromfile(model_paths.weights, np.uint8)
    )
    network.setInput(letterbox(decode_image(photos[1].read_bytes()).pixels, 416)[0])
    scores = np.vstack(network.forward(network.getUnconnectedOutLayersNames()))[:, 5:]
    assert 0.05 < scores[scores > 0].min() < SCORE_FLOOR


CAMERA_SIZE = 320  # what a camera's detector sends (Frigate's default model input)


@pytest.mark.parametrize("engine", FLOAT_ENGINES)
def test_float_engines_honour_the_input_size(
    engine: str, model_paths: ModelPaths, photos: list[Path]
) -> None:
    """The graph is converted at the configured size (its own file, the size in its sidecar),
    and detects exactly what OpenCV detects at that size."""
    converted = ensure_onnx(model_paths, CAMERA_SIZE)
    assert converted == onnx_path(model_paths, CAMERA_SIZE) != onnx_path(model_paths)
    sidecar = json.loads(converted.with_name(converted.name + ".json").read_text())
    assert sidecar["input_size"] == CAMERA_SIZE
    labels = model_paths.labels()
    expected = Detector(
        create_engine("opencv", model_paths, input_size=CAMERA_SIZE), labels, input_size=CAMERA_SIZE
    )
    actual = Detector(
        create_engine(engine, model_paths, input_size=CAMERA_SIZE), labels, input_size=CAMERA_SIZE
    )
    found = 0
    for photo in photos:
        wanted = expected.detect_bytes(photo.read_bytes())
        found += len(wanted)
        assert differences(wanted, actual.detect_bytes(photo.read_bytes())) == [], photo.name
    assert found > 0


def test_the_cfg_size_graph_records_its_size(model_paths: ModelPaths, converted: Path) -> None:
    sidecar = json.loads(converted.with_name(converted.name + ".json").read_text())
    assert sidecar["input_size"] == 416 == graph_input_size(model_paths)


YOLOV4_SIZES = (416, CAMERA_SIZE)


@pytest.fixture(scope="module")
def yolov4_opencv_detections(
    yolov4_tiny_paths: ModelPaths, photos: list[Path]
) -> dict[int, list[list]]:
    """OpenCV's detections on every photo, per input size."""
    engine = create_engine("opencv", yolov4_tiny_paths)
    labels = yolov4_tiny_paths.labels()
    return {
        size: [
            Detector(engine, labels, input_size=size).detect_bytes(photo.read_bytes())
            for photo in photos
        ]
        for size in YOLOV4_SIZES
    }


@pytest.mark.parametrize("size", YOLOV4_SIZES)
@pytest.mark.parametrize("engine", FLOAT_ENGINES)
def test_yolov4_tiny_rows_match_opencv(
    engine: str, size: int, yolov4_tiny_paths: ModelPaths, photos: list[Path]
) -> None:
    """Every row of both heads on every photo: the grouped routes, the stretched centres
    (``scale_x_y``) and the second head's anchor mask as OpenCV's darknet importer runs them."""
    expected_engine = create_engine("opencv", yolov4_tiny_paths)
    actual_engine = create_engine(engine, yolov4_tiny_paths, input_size=size)
    cells = (size // 32) ** 2 + (size // 16) ** 2
    for photo in photos:
        blob, _ = letterbox(decode_image(photo.read_bytes()).pixels, size)
        expected = expected_engine.forward(blob)
        actual = actual_engine.forward(blob)
        assert actual.shape == expected.shape == (3 * cells, 85)
        np.testing.assert_allclose(actual, expected, atol=1e-4, err_msg=photo.name)


@pytest.mark.parametrize("size", YOLOV4_SIZES)
@pytest.mark.parametrize("engine", FLOAT_ENGINES)
def test_yolov4_tiny_detections_are_identical_to_opencv(
    engine: str,
    size: int,
    yolov4_tiny_paths: ModelPaths,
    photos: list[Path],
    yolov4_opencv_detections: dict[int, list[list]],
) -> None:
    expected = yolov4_opencv_detections[size]
    assert sum(map(len, expected)) > len(photos)  # the photos do contain objects
    detector = Detector(
        create_engine(engine, yolov4_tiny_paths, input_size=size),
        yolov4_tiny_paths.labels(),
        input_size=size,
    )
    for photo, wanted in zip(photos, expected, strict=True):
        assert differences(wanted, detector.detect_bytes(photo.read_bytes())) == [], photo.name
