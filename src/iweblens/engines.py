"""Inference engines: the YOLOv3-tiny network behind one small interface.

An engine takes a letterboxed blob (1x3xSxS, RGB in [0, 1]) and returns YOLO rows: centre x,
centre y, width, height (relative to the network input), objectness, then one score per class that
already includes the objectness, as OpenCV's darknet importer emits them. An engine instance is
not thread-safe (one ``cv2.dnn.Net`` shared by two threads crashes); give each inference thread
its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import cv2
import numpy as np

from .fast_engines import OnnxRuntimeEngine, OpenVinoEngine, OpenVinoInt8Engine
from .model_store import ModelPaths


class Engine(Protocol):
    """One network instance, owned by one thread."""

    def forward(self, blob: np.ndarray) -> np.ndarray:
        """Run the network on a 1x3xSxS blob and return an (N, 5 + classes) array of YOLO rows."""
        ...


class OpenCVEngine:
    """YOLOv3-tiny through OpenCV's DNN module and its darknet importer."""

    def __init__(self, paths: ModelPaths) -> None:
        self.net = cv2.dnn.readNetFromDarknet(str(paths.cfg), str(paths.weights))
        self.net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.output_names = self.net.getUnconnectedOutLayersNames()

    def forward(self, blob: np.ndarray) -> np.ndarray:
        self.net.setInput(blob)
        return np.vstack(self.net.forward(self.output_names))


EngineFactory = Callable[[ModelPaths], Engine]

ENGINES: dict[str, EngineFactory] = {
    "opencv": OpenCVEngine,
    "onnxruntime": OnnxRuntimeEngine,
    "openvino": OpenVinoEngine,
    "openvino-int8": OpenVinoInt8Engine,
}


def create_engine(name: str, paths: ModelPaths) -> Engine:
    """Build a fresh engine instance by name (``IWEBLENS_ENGINE``)."""
    try:
        factory = ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINES))
        raise ValueError(f"unknown engine {name!r}; choose one of {known}") from None
    return factory(paths)


def set_compute_threads(threads: int) -> None:
    """Set how many threads one forward pass may use (process-wide in OpenCV)."""
    cv2.setNumThreads(threads)
