"""An INT8 YOLOv3-tiny for OpenVINO, by NNCF post-training quantization of the converted graph.

VNNI instructions do four int8 multiply-adds where float32 does one, so the quantized network
runs about three times faster than the float one (17.9 against 55 CPU ms per forward on AVX-512
VNNI; 45.5 against 78 on an AVX2-only Zen 4). Quantization needs calibration photographs (the
activation ranges come from them), so it is a separate step, ``iweblens quantize --images DIR``,
rather than part of ``fetch-model``. The result is derived data: it is cached next to the model
files with a sidecar recording what it was made from, and never committed. NNCF is heavy (SciPy,
scikit-learn), so it lives in the optional ``int8`` extra; serving the quantized model needs only
OpenVINO.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from iweblens.inference.engines.openvino import int8_path, int8_sidecar
from iweblens.inference.images import decode_image
from iweblens.inference.letterbox import letterbox
from iweblens.models.store import ModelPaths, sha256_of

if TYPE_CHECKING:
    from openvino import Model, Node

CALIBRATION_COUNT = 64


def calibration_set(folder: Path, count: int = CALIBRATION_COUNT) -> list[Path]:
    """The first ``count`` JPEGs of a folder by file name, so a run can be repeated exactly."""
    return sorted(folder.glob("*.jpg"))[:count]


def float_convolutions(model: Model) -> list[str]:
    """Names of the convolutions kept in float in an OpenVINO model of the network.

    The first reads the image (its int8 weights lose the most: NNCF keeps one bit of them back
    so that CPUs without VNNI cannot overflow), and the two YOLO heads produce the logits that
    every score is made of. A head is a convolution whose bias is not followed by an activation.
    """
    names = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "Convolution":
            continue
        reads_image = op.input_value(0).get_node().get_type_name() == "Parameter"
        after_bias = [_consumers(node) for node in _consumers(op) if node.get_type_name() == "Add"]
        activated = any(node.get_type_name() == "PRelu" for nodes in after_bias for node in nodes)
        if reads_image or not activated:
            names.append(op.get_friendly_name())
    return names


def _consumers(op: Node) -> list[Node]:
    return [target.get_node() for out in op.outputs() for target in out.get_target_inputs()]


def quantize(paths: ModelPaths, images: Sequence[Path], input_size: int = 416) -> Path:
    """Quantize the converted graph with activation ranges measured on ``images``; cache it."""
    import nncf  # optional dependency: the `int8` extra
    import openvino as ov
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    from iweblens.models.onnx_export import ensure_onnx  # needs the engines extra

    source = ensure_onnx(paths)
    blobs = [letterbox(decode_image(image.read_bytes()).pixels, input_size)[0] for image in images]
    model = ov.Core().read_model(str(source))
    # Measured on the 128 COCO photographs, calibrated on the first 64 by name, judged on the
    # other 64 against opencv's detections (docs/benchmarks.md has the table): NNCF's defaults
    # give F1 0.88; the score x objectness products in float, asymmetric activations (MIXED)
    # and full bias correction 0.94. Activation ranges from the extreme values (MINMAX) instead
    # of the mean of per-image maxima, which clips the strongest activations and biases every
    # score downwards, and the first convolution and the heads in float bring the score error
    # from 0.045 to 0.028 and F1 to 0.96-0.98 (two splits).
    quantized = nncf.quantize(
        model,
        nncf.Dataset(blobs),
        subset_size=len(blobs),
        preset=nncf.QuantizationPreset.MIXED,
        fast_bias_correction=False,
        ignored_scope=nncf.IgnoredScope(names=float_convolutions(model), types=["Multiply"]),
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX
        ),
    )
    target = int8_path(paths)
    ov.save_model(quantized, str(target), compress_to_fp16=False)
    calibration = hashlib.sha256()
    for image in images:
        calibration.update(image.read_bytes())
    provenance = {
        "onnx_sha256": sha256_of(source),
        "calibration_images": [image.name for image in images],
        "calibration_sha256": calibration.hexdigest(),
        "nncf_version": nncf.__version__,
        "openvino_version": ov.get_version(),
        # The quantization is deterministic: the same photographs and versions give these bytes.
        "weights_sha256": sha256_of(target.with_suffix(".bin")),
    }
    int8_sidecar(target).write_text(json.dumps(provenance, indent=2) + "\n")
    return target
