import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from iweblens.detection import DetectionParams, ImageDecodeError
from iweblens.inference.detector import Detector
from iweblens.inference.engines import SCORE_FLOOR, create_engine
from iweblens.inference.pixels import decode_image
from iweblens.models.store import ModelPaths


@pytest.fixture(scope="module")
def detector(model_paths: ModelPaths) -> Detector:
    return Detector(create_engine("opencv", model_paths), model_paths.labels())


def labels_in(detector: Detector, path: Path) -> list[str]:
    return [d.label for d in detector.detect_bytes(path.read_bytes())]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("000000007454.jpg", {"person"}),
        ("000000012807.jpg", {"elephant", "person"}),
        ("000000028124.jpg", {"bus"}),
        ("000000473528.jpg", {"dog", "person", "frisbee"}),
    ],
)
def test_finds_the_objects_in_known_photographs(
    detector: Detector, photos: list[Path], name: str, expected: set[str]
) -> None:
    photo = next(p for p in photos if p.name == name)
    assert expected <= set(labels_in(detector, photo))


def test_boxes_are_inside_the_image_and_sorted(detector: Detector, coco128: list[Path]) -> None:
    found = 0
    for path in coco128[:32]:
        image = cv2.imread(str(path))
        detections = detector.detect(image)
        confidences = [d.confidence for d in detections]
        assert confidences == sorted(confidences, reverse=True)
        height, width = image.shape[:2]
        for d in detections:
            found += 1
            assert 0.5 < d.confidence <= 1.0
            assert d.left >= 0 and d.left + d.width <= width - 1
            assert d.top >= 0 and d.top + d.height <= height - 1
    assert found > 16


def test_threshold_and_nms_are_configurable(detector: Detector, photos: list[Path]) -> None:
    image = decode_image(photos[-1].read_bytes()).pixels
    strict = Detector(detector.engine, detector.labels, confidence=0.9).detect(image)
    loose = Detector(detector.engine, detector.labels, confidence=0.2).detect(image)
    assert all(d.confidence > 0.9 for d in strict)
    assert len(loose) > len(detector.detect(image)) >= len(strict)


def test_one_network_per_thread_gives_identical_results(
    model_paths: ModelPaths, photos: list[Path]
) -> None:
    expected = {}
    reference = Detector(create_engine("opencv", model_paths), model_paths.labels())
    for photo in photos:
        expected[photo] = reference.detect_bytes(photo.read_bytes())
    results: dict[int, dict[Path, list]] = {}

    def work(index: int) -> None:
        own = Detector(create_engine("opencv", model_paths), model_paths.labels())
        results[index] = {p: own.detect_bytes(p.read_bytes()) for p in photos * 2}

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(results[i] == expected for i in range(3))


def test_gif_and_grayscale_decode_to_bgr(photos: list[Path]) -> None:
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.open(photos[0]).convert("L").save(buffer, format="GIF")
    image = decode_image(buffer.getvalue()).pixels
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def test_undecodable_bytes_raise() -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(b"definitely not an image")


def test_per_request_thresholds_equal_a_detector_configured_with_them(
    detector: Detector, photos: list[Path]
) -> None:
    for photo in photos:
        image = decode_image(photo.read_bytes()).pixels
        for confidence, nms in ((0.3, 0.45), (0.7, 0.45), (0.5, 0.2), (0.5, 0.9)):
            configured = Detector(detector.engine, detector.labels, confidence=confidence, nms=nms)
            asked = detector.detect(image, DetectionParams(confidence=confidence, nms=nms))
            assert asked == configured.detect(image), (photo.name, confidence, nms)


def test_thresholds_below_the_engines_floor_behave_as_the_floor(
    detector: Detector, photos: list[Path]
) -> None:
    image = decode_image(photos[-1].read_bytes()).pixels
    at_floor = detector.detect(image, DetectionParams(confidence=SCORE_FLOOR))
    assert min(d.confidence for d in at_floor) < 0.3, "the photo must have low-score objects"
    for below in (0.0, 0.05, 0.19999):
        assert detector.detect(image, DetectionParams(confidence=below)) == at_floor


def test_classes_and_max_detections_filter_the_full_answer(
    detector: Detector, photos: list[Path]
) -> None:
    photo = next(p for p in photos if p.name == "000000473528.jpg")
    image = decode_image(photo.read_bytes()).pixels
    full = detector.detect(image, DetectionParams(confidence=0.25))
    labels = {d.label for d in full}
    assert {"dog", "person"} <= labels and len(labels) >= 3
    kept = detector.detect(image, DetectionParams(confidence=0.25, classes=frozenset({"dog"})))
    assert kept == [d for d in full if d.label == "dog"]
    both = frozenset({"dog", "person"})
    assert detector.detect(image, DetectionParams(confidence=0.25, classes=both)) == [
        d for d in full if d.label in both
    ]
    assert detector.detect(image, DetectionParams(classes=frozenset())) == []
    top = detector.detect(image, DetectionParams(confidence=0.25, max_detections=2))
    assert top == full[:2]
    assert [detector.labels[d.class_id] for d in full] == [d.label for d in full]


def test_run_reports_the_decoded_size_and_draws_only_when_asked(
    detector: Detector, photos: list[Path]
) -> None:
    data = photos[0].read_bytes()
    height, width = decode_image(data).pixels.shape[:2]
    plain = detector.run(data)
    assert (plain.width, plain.height, plain.annotated_jpeg) == (width, height, None)
    assert plain.detections == detector.detect_bytes(data)
    drawn = detector.run(data, DetectionParams(annotate=True))
    assert drawn.detections == plain.detections
    assert drawn.annotated_jpeg is not None and drawn.annotated_jpeg[:3] == b"\xff\xd8\xff"
