"""YOLOv3-tiny detection that reproduces the original darknet program's answers.

The details that make OpenCV agree with ``darknet detector test`` (F1 0.99 on COCO photographs)
are darknet's own: a corner-aligned bilinear letterbox computed on float pixels with 0.5 grey
padding, class scores that already include objectness, every class above the threshold reported,
and NMS per class at IoU 0.45.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from iweblens.config import Settings
from iweblens.detection import Detection
from iweblens.inference.engines import Engine, create_engine
from iweblens.inference.images import decode_image
from iweblens.models.store import ModelPaths


@dataclass(frozen=True)
class Letterbox:
    """Where the resized image sits inside the square network input."""

    size: int
    new_width: int
    new_height: int

    @property
    def offset_x(self) -> int:
        return (self.size - self.new_width) // 2

    @property
    def offset_y(self) -> int:
        return (self.size - self.new_height) // 2


def _axis_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of darknet's corner-aligned linear resize along one axis."""
    scale = np.float32(source - 1) / np.float32(target - 1) if target > 1 else np.float32(0)
    coords = np.arange(target, dtype=np.float32) * scale
    low = coords.astype(np.int64)
    frac = (coords - low).astype(np.float32)
    return low, np.minimum(low + 1, source - 1), frac


def darknet_resize(image: np.ndarray, width: int, height: int, scale: float = 1.0) -> np.ndarray:
    """Resize an HxWxC image exactly as darknet's ``resize_image`` does, on float pixels.

    Pixels are multiplied by ``scale`` as they are turned into floats; only the source columns
    the resize reads are converted, so a large photograph never exists as a float copy.
    """
    src_h, src_w = image.shape[:2]
    low, high, frac = _axis_weights(src_w, width)
    # darknet takes the last column straight from the source's last column.
    low[-1], frac[-1] = src_w - 1, 0.0
    left = image[:, low].astype(np.float32) * np.float32(scale)
    right = image[:, high].astype(np.float32) * np.float32(scale)
    part = left * (1 - frac)[None, :, None] + right * frac[None, :, None]
    low, high, frac = _axis_weights(src_h, height)
    below = frac.copy()
    # ...and gives the last row no share of the row below it (even if the float index fell short).
    below[-1] = 0.0
    return part[low] * (1 - frac)[:, None, None] + part[high] * below[:, None, None]


def letterbox(image_bgr: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Make the network input: aspect-preserving resize, centred on 0.5 grey, RGB, NCHW."""
    height, width = image_bgr.shape[:2]
    if size / width < size / height:
        new_w, new_h = size, max(1, height * size // width)
    else:
        new_w, new_h = max(1, width * size // height), size
    box = Letterbox(size, new_w, new_h)
    canvas = np.full((size, size, 3), 0.5, dtype=np.float32)
    canvas[box.offset_y : box.offset_y + new_h, box.offset_x : box.offset_x + new_w] = (
        darknet_resize(image_bgr[:, :, ::-1], new_w, new_h, scale=1 / 255)
    )
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)[None]), box


class Detector:
    """Letterbox, forward, decode: one engine, so one detector per inference thread."""

    def __init__(
        self,
        engine: Engine,
        labels: list[str],
        *,
        input_size: int = 416,
        confidence: float = 0.5,
        nms: float = 0.45,
    ) -> None:
        self.engine = engine
        self.labels = labels
        self.input_size = input_size
        self.confidence = confidence
        self.nms = nms

    @classmethod
    def from_settings(
        cls, settings: Settings, paths: ModelPaths, engine: str | None = None
    ) -> Detector:
        """A detector with a fresh engine (``settings.engine`` unless named) and the thresholds."""
        return cls(
            create_engine(engine or settings.engine, paths),
            paths.labels(),
            input_size=settings.input_size,
            confidence=settings.confidence,
            nms=settings.nms,
        )

    def detect_bytes(self, data: bytes) -> list[Detection]:
        """Decode an encoded image and detect objects in it."""
        return self.detect(decode_image(data))

    def detect(self, image_bgr: np.ndarray) -> list[Detection]:
        """Detect objects in a BGR image; the result is sorted by confidence, highest first."""
        blob, box = letterbox(image_bgr, self.input_size)
        return self.decode(self.engine.forward(blob), box, image_bgr.shape[1], image_bgr.shape[0])

    def decode(self, rows: np.ndarray, box: Letterbox, width: int, height: int) -> list[Detection]:
        """Turn YOLO rows into detections in original-image pixels (darknet's box arithmetic)."""
        scores = rows[:, 5:]
        row_idx, class_idx = np.nonzero(scores > self.confidence)
        if row_idx.size == 0:
            return []
        size = np.float32(box.size)
        cx = (rows[row_idx, 0] - box.offset_x / size) / (box.new_width / size)
        cy = (rows[row_idx, 1] - box.offset_y / size) / (box.new_height / size)
        bw = rows[row_idx, 2] * (size / box.new_width)
        bh = rows[row_idx, 3] * (size / box.new_height)
        left, right = (cx - bw / 2) * width, (cx + bw / 2) * width
        top, bottom = (cy - bh / 2) * height, (cy + bh / 2) * height
        confidences = scores[row_idx, class_idx]
        keep = cv2.dnn.NMSBoxesBatched(
            np.stack([left, top, right - left, bottom - top], axis=1).tolist(),
            confidences.tolist(),
            class_idx.tolist(),
            self.confidence,
            self.nms,
        )
        detections = []
        for i in np.asarray(keep, dtype=np.int64).reshape(-1):
            # darknet truncates to int, then clips to the image.
            x0, x1 = max(int(left[i]), 0), min(int(right[i]), width - 1)
            y0, y1 = max(int(top[i]), 0), min(int(bottom[i]), height - 1)
            detections.append(
                Detection(
                    label=self.labels[class_idx[i]],
                    confidence=float(confidences[i]),
                    left=x0,
                    top=y0,
                    width=max(x1 - x0, 0),
                    height=max(y1 - y0, 0),
                )
            )
        detections.sort(key=lambda d: (-d.confidence, d.label, d.left, d.top))
        return detections
