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

import numpy as np

from iweblens.inference.engines.onnxruntime import OnnxRuntimeEngine
from iweblens.inference.engines.opencv import OpenCVEngine, set_compute_threads
from iweblens.inference.engines.openvino import OpenVinoEngine, OpenVinoInt8Engine
from iweblens.models.store import ModelPaths

# Every engine zeroes class scores at or below this, so no threshold below it can be honoured.
# OpenCV's darknet importer gives each [yolo] layer a `thresh` of 0.2 when the cfg names none (the
# official cfg names none): adding `thresh=0.05` to the cfg lets scores down to 0.05 through, seen
# on 000000012807.jpg with OpenCV 4.14. The ONNX graph imitates it (models/onnx_export.SCORE_FLOOR).
SCORE_FLOOR = 0.2


class Engine(Protocol):
    """One network instance, owned by one thread."""

    def forward(self, blob: np.ndarray) -> np.ndarray:
        """Run the network on a 1x3xSxS blob and return an (N, 5 + classes) array of YOLO rows."""
        ...


EngineFactory = Callable[[ModelPaths], Engine]

ENGINES: dict[str, EngineFactory] = {
    "opencv": OpenCVEngine,
    "onnxruntime": OnnxRuntimeEngine,
    "openvino": OpenVinoEngine,
    "openvino-int8": OpenVinoInt8Engine,
}


class UnknownEngineError(ValueError):
    """No engine of that name is registered."""


def check_engine(name: str) -> EngineFactory:
    """The factory registered as ``name``; ``UnknownEngineError`` lists the known names."""
    try:
        return ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINES))
        raise UnknownEngineError(f"unknown engine {name!r}; choose one of {known}") from None


def create_engine(name: str, paths: ModelPaths) -> Engine:
    """Build a fresh engine instance by name (``Settings.engine``)."""
    return check_engine(name)(paths)


__all__ = [
    "ENGINES",
    "SCORE_FLOOR",
    "Engine",
    "EngineFactory",
    "UnknownEngineError",
    "check_engine",
    "create_engine",
    "set_compute_threads",
]
