"""The converted ONNX graph on ONNX Runtime's CPU provider.

It takes the same blob and returns the same rows as ``OpenCVEngine`` (the graph includes the YOLO
decode, see ``iweblens.models.onnx_export``). ONNX Runtime (the ``engines`` extra) is imported
only when the engine is built.
"""

from __future__ import annotations

import numpy as np

from iweblens.inference.engines.opencv import compute_threads
from iweblens.models.store import ModelPaths


class OnnxRuntimeEngine:
    """The ONNX graph on ONNX Runtime's CPU provider, sequential, fixed intra-op threads."""

    def __init__(
        self, paths: ModelPaths, threads: int | None = None, *, input_size: int | None = None
    ) -> None:
        """``input_size``: the side of the blobs it is given (None: the cfg's); the graph is
        converted at it, once (cached)."""
        import onnxruntime as ort  # optional dependency: the `engines` extra

        from iweblens.models.onnx_export import INPUT_NAME, ensure_onnx

        self.input_name = INPUT_NAME
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or compute_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(ensure_onnx(paths, input_size)), options, providers=["CPUExecutionProvider"]
        )

    def forward(self, blob: np.ndarray) -> np.ndarray:
        rows: np.ndarray = self.session.run(None, {self.input_name: blob})[0]
        return rows
