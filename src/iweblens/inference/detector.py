"""YOLOv3-tiny detection that reproduces the original darknet program's answers.

The details that make OpenCV agree with ``darknet detector test`` (F1 0.99 on COCO photographs)
are darknet's own: a corner-aligned bilinear letterbox computed on float pixels with 0.5 grey
padding, class scores that already include objectness, every class above the threshold reported,
and NMS per class at IoU 0.45.
"""

from __future__ import annotations

import cv2
import numpy as np

from iweblens.config import Settings
from iweblens.detection import Detection
from iweblens.inference.engines import Engine, create_engine
from iweblens.inference.images import decode_image
from iweblens.inference.letterbox import Letterbox, Letterboxer
from iweblens.models.store import ModelPaths


class Detector:
    """Letterbox, forward, decode: one engine and one letterbox blob, so one detector per thread."""

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
        self.letterboxer = Letterboxer(input_size)

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
        blob, box = self.letterboxer(image_bgr)
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
