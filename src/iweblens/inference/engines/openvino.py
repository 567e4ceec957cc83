"""The converted ONNX graph on OpenVINO, and its INT8 variant (``iweblens quantize``).

Both take the same blob and return the same rows as ``OpenCVEngine`` (the graph includes the YOLO
decode, see ``iweblens.models.onnx_export``), so the detector cannot tell the engines apart. How
much faster the float engines (this and ONNX Runtime) are depends on the CPU: about 2x where
OpenCV's DNN convolutions are slow (Ice Lake), about 1.05x where OpenCV's Winograd kernels already
run at the FMA peak (Zen 4). Each instance runs on as many compute threads as
``set_compute_threads`` gave OpenCV (the inference pool's share of the CPU allotment: one thread
on a 0.5-CPU pod), so switching engines never changes how the CPU is divided. Results stay
float32: OpenVINO would otherwise pick bf16 on CPUs that have it, which moves scores by up to 0.2.
OpenVINO (the ``engines`` extra) is imported only when an engine is built; ``opencv`` works
without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from iweblens.inference.engines.opencv import compute_threads
from iweblens.models.store import ModelPaths, sha256_of

INT8_SUFFIX = "-int8.xml"  # after the cfg's stem: yolov3-tiny-int8.xml


def _openvino_config(threads: int) -> dict[str, str]:
    return {
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",
        "INFERENCE_NUM_THREADS": str(threads),
        "INFERENCE_PRECISION_HINT": "f32",
        "ENABLE_CPU_PINNING": "NO",
    }


class OpenVinoEngine:
    """The ONNX graph compiled by OpenVINO for the CPU, latency hint, one stream."""

    def __init__(
        self, paths: ModelPaths, threads: int | None = None, *, input_size: int | None = None
    ) -> None:
        """``input_size``: the side of the blobs it is given (None: the cfg's)."""
        import openvino as ov  # optional dependency: the `engines` extra

        self.input_size = input_size
        core = ov.Core()
        config = _openvino_config(threads or compute_threads())
        self.compiled = core.compile_model(str(self.model_file(paths)), "CPU", config)
        self.request = self.compiled.create_infer_request()

    def model_file(self, paths: ModelPaths) -> Path:
        """The network to compile: the float graph converted from the darknet files at the
        input size."""
        from iweblens.models.onnx_export import ensure_onnx

        return ensure_onnx(paths, self.input_size)

    def forward(self, blob: np.ndarray) -> np.ndarray:
        self.request.infer({0: blob})
        rows: np.ndarray = self.request.get_output_tensor(0).data.copy()
        return rows


def int8_path(paths: ModelPaths) -> Path:
    """Where the quantized model (OpenVINO IR: this .xml plus a .bin) of these files lives."""
    return paths.derived_dir / f"{paths.cfg.stem}{INT8_SUFFIX}"


def int8_sidecar(model: Path) -> Path:
    """The provenance record next to a quantized model: what it was made from."""
    return model.with_name(model.name + ".json")


def quantized_model(paths: ModelPaths) -> Path:
    """The cached INT8 model, refusing one made from another float graph than the current."""
    from iweblens.models.onnx_export import ensure_onnx

    target = int8_path(paths)
    try:
        provenance = json.loads(int8_sidecar(target).read_text())
    except (OSError, ValueError):
        provenance = None
    if not target.is_file() or provenance is None:
        raise FileNotFoundError(
            f"no INT8 model in {target.parent}; run `iweblens quantize --images DIR` first"
        )
    if provenance.get("onnx_sha256") != sha256_of(ensure_onnx(paths)):
        raise FileNotFoundError(
            f"{target} was quantized from another model; run `iweblens quantize` again"
        )
    return target


class OpenVinoInt8Engine(OpenVinoEngine):
    """The NNCF-quantized graph (``iweblens quantize``) on OpenVINO: same rows, int8 convs.

    Quantized from the graph at the cfg's input size, so it takes that size only
    (``engines.check_input_size`` refuses another).
    """

    def model_file(self, paths: ModelPaths) -> Path:
        return quantized_model(paths)
