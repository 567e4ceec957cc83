import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from iweblens.detection import ImageDecodeError
from iweblens.inference.detector import Detector, darknet_resize, letterbox
from iweblens.inference.engines import create_engine
from iweblens.inference.images import decode_image
from iweblens.models.store import ModelPaths


@pytest.fixture(scope="module")
def detector(model_paths: ModelPaths) -> Detector:
    return Detector(create_engine("opencv", model_paths), model_paths.labels())


def labels_in(detector: Detector, path: Path) -> list[str]:
    return [d.label for d in detector.detect_bytes(path.read_bytes())]


def test_darknet_resize_is_corner_aligned() -> None:
    image = np.array([[0.0, 1.0], [2.0, 3.0]], dtype=np.float32)[:, :, None]
    resized = darknet_resize(image, 3, 3)[:, :, 0]
    # Corners map onto corners; the centre is the mean of the four source pixels.
    np.testing.assert_allclose(resized, [[0, 0.5, 1], [1, 1.5, 2], [2, 2.5, 3]], atol=1e-6)


def test_letterbox_keeps_aspect_and_pads_with_grey() -> None:
    image = np.zeros((240, 640, 3), np.uint8)
    blob, box = letterbox(image, 416)
    assert blob.shape == (1, 3, 416, 416) and blob.dtype == np.float32
    assert (box.new_width, box.new_height) == (416, 156)
    assert box.offset_y == 130
    assert blob[0, :, 0, 0].tolist() == [0.5, 0.5, 0.5]
    assert blob[0, :, 208, 208].tolist() == [0.0, 0.0, 0.0]


def test_letterbox_sends_rgb_to_the_network() -> None:
    image = np.zeros((416, 416, 3), np.uint8)
    image[:, :, 2] = 255  # red in OpenCV's BGR order
    blob, _ = letterbox(image, 416)
    assert blob[0, 0].min() == 1.0 and blob[0, 2].max() == 0.0


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
