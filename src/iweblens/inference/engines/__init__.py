"""Inference engines: the YOLOv3-tiny network behind one small interface.

An engine takes a letterboxed blob (1x3xSxS, RGB in [0, 1]) and returns YOLO rows: centre x,
centre y, width, height (relative to the network input), objectness, then one score per class that
already includes the objectness, as OpenCV's darknet importer emits them. An engine instance is
not thread-safe (one ``cv2.dnn.Net`` shared by two threads crashes); give each inference thread
its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.util import find_spec
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


class EngineFactory(Protocol):
    """Builds one engine from the model files, for blobs of ``input_size`` (None: the cfg's)."""

    def __call__(self, paths: ModelPaths, *, input_size: int | None = None) -> Engine: ...


ENGINES: dict[str, EngineFactory] = {
    "opencv": OpenCVEngine,
    "onnxruntime": OnnxRuntimeEngine,
    "openvino": OpenVinoEngine,
    "openvino-int8": OpenVinoInt8Engine,
}


@dataclass(frozen=True)
class EngineNeeds:
    """What an engine needs beyond the base install."""

    packages: tuple[str, ...] = ()  # import names of its third-party packages
    extra: str | None = None  # the optional dependencies (pyproject.toml) that install them
    # It runs a model made once at the cfg's input size (the INT8 model), so takes no other.
    cfg_size_only: bool = False


_OPENVINO = ("onnx", "openvino")
NEEDS: dict[str, EngineNeeds] = {
    "opencv": EngineNeeds(),
    "onnxruntime": EngineNeeds(("onnx", "onnxruntime"), "engines"),
    "openvino": EngineNeeds(_OPENVINO, "openvino"),
    "openvino-int8": EngineNeeds(_OPENVINO, "openvino", cfg_size_only=True),
}


class UnknownEngineError(ValueError):
    """No engine of that name is registered."""


class EngineUnavailableError(RuntimeError):
    """The engine cannot run here: a package of its extra is missing, or it cannot take the
    configured input size."""


def check_engine(name: str) -> EngineFactory:
    """The factory registered as ``name``, its packages found (not imported: this is fast).

    Raises ``UnknownEngineError`` listing the known names, ``EngineUnavailableError`` naming the
    missing package and the extra that installs it.
    """
    try:
        factory = ENGINES[name]
    except KeyError:
        known = ", ".join(sorted(ENGINES))
        raise UnknownEngineError(f"unknown engine {name!r}; choose one of {known}") from None
    needs = NEEDS[name]
    if missing := [package for package in needs.packages if find_spec(package) is None]:
        raise EngineUnavailableError(
            f"engine {name!r} needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed; install the {needs.extra!r} "
            f"extra: pip install 'iweblens[{needs.extra}]'"
        )
    return factory


def check_input_size(name: str, input_size: int, paths: ModelPaths) -> None:
    """Raise ``EngineUnavailableError`` when engine ``name`` (checked) cannot take
    ``input_size``: the INT8 model is quantized at the cfg's size; the other engines take any
    (the float ONNX graph is converted at the configured size)."""
    if not NEEDS[name].cfg_size_only:
        return
    from iweblens.models.onnx_export import graph_input_size

    graph = graph_input_size(paths)
    if input_size != graph:
        raise EngineUnavailableError(
            f"engine {name!r} runs a model quantized at {graph} x {graph}, which cannot take "
            f"IWEBLENS_INPUT_SIZE={input_size}: set it to {graph}, or use the float engine "
            "openvino (any multiple of 32)"
        )


def create_engine(name: str, paths: ModelPaths, input_size: int | None = None) -> Engine:
    """Build a fresh engine instance by name (``Settings.engine``) for blobs of ``input_size``
    (None: the cfg's)."""
    return check_engine(name)(paths, input_size=input_size)


__all__ = [
    "ENGINES",
    "NEEDS",
    "SCORE_FLOOR",
    "Engine",
    "EngineFactory",
    "EngineNeeds",
    "EngineUnavailableError",
    "UnknownEngineError",
    "check_engine",
    "check_input_size",
    "create_engine",
    "set_compute_threads",
]
