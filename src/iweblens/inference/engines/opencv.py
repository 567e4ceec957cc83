"""YOLOv3-tiny through OpenCV's DNN module and its darknet importer: the default engine.

OpenCV's thread count is process-wide; the other engines read it (``compute_threads``) so that
switching engines never changes how the CPU is divided.
"""

from __future__ import annotations

import cv2
import numpy as np

from iweblens.models.store import ModelPaths


class OpenCVEngine:
    """YOLOv3-tiny through OpenCV's DNN module and its darknet importer."""

    def __init__(self, paths: ModelPaths, *, input_size: int | None = None) -> None:
        """``input_size`` is not needed: the darknet importer's network takes any blob side."""
        del input_size
        self.net = cv2.dnn.readNetFromDarknet(str(paths.cfg), str(paths.weights))
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.output_names = self.net.getUnconnectedOutLayersNames()

    def forward(self, blob: np.ndarray) -> np.ndarray:
        self.net.setInput(blob)
        return np.vstack(self.net.forward(self.output_names))


def set_compute_threads(threads: int) -> None:
    """Set how many threads one forward pass may use (process-wide in OpenCV)."""
    cv2.setNumThreads(threads)


def compute_threads() -> int:
    """Compute threads per engine: the process-wide count set by ``set_compute_threads``."""
    return cv2.getNumThreads()
