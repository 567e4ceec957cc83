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
from iweblens.inference.letterbox import letterbox
from iweblens.inference.pixels import decode_image
from iweblens.models.store import ModelPaths, sha256_of

if TYPE_CHECKING:
    from openvino import Model, Node

CALIBRATION_COUNT = 64
# Leading convolutions kept in float (see float_convolutions and docs/int8.md).
FLOAT_LEADING = 2


def calibration_set(folder: Path, count: int = CALIBRATION_COUNT) -> list[Path]:
    """The first ``count`` JPEGs of a folder by file name, so a run can be repeated exactly."""
    return sorted(folder.glob("*.jpg"))[:count]


def float_convolutions(model: Model) -> list[str]:
    """Names of the convolutions kept in float in an OpenVINO model of the network.

    The first two (the first reads the image, and its int8 weights lose a bit to NNCF's overflow
    fix for CPUs without VNNI; the second carries the next-largest error of the cheap layers)
    and the two YOLO heads, whose outputs are the logits every score is made of. A head is a
    convolution whose bias is not followed by an activation.
    """
    convolutions = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    heads = [op for op in convolutions if not _activated(op)]
    return [op.get_friendly_name() for op in [*convolutions[:FLOAT_LEADING], *heads]]


def _activated(convolution: Node) -> bool:
    """Whether the convolution's bias addition feeds an activation (LeakyReLU is a PRelu here)."""
    bias = [node for node in _consumers(convolution) if node.get_type_name() == "Add"]
    return any(node.get_type_name() == "PRelu" for add in bias for node in _consumers(add))


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
    # other 64 against opencv's detections (docs/int8.md has every variant): NNCF's defaults
    # give F1 0.88; the score x objectness products in float, asymmetric activations (MIXED)
    # and full bias correction 0.94. Activation ranges from the extreme values (MINMAX) instead
    # of the mean of per-image maxima, which clips the strongest activations and biases every
    # score downwards, and the first two convolutions and the heads in float bring the score
    # error from 0.045 to 0.025 and F1 to 0.974-0.977 (both splits, 5 or 64 calibration photos)
    # for 4.5 CPU ms of forward (17.9 -> 22.4 on AVX-512 VNNI).
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
