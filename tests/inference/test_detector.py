import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from iweblens.detection import ImageDecodeError
from iweblens.inference.detector import Detector
from iweblens.inference.engines import create_engine
from iweblens.inference.images import decode_image
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
    image = decode_image(photos[-1].read_bytes())
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
    image = decode_image(buffer.getvalue())
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def test_undecodable_bytes_raise() -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(b"definitely not an image")
