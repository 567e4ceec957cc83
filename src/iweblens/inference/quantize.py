"""An INT8 YOLOv3-tiny for OpenVINO, by NNCF post-training quantization of the converted graph.

VNNI instructions do four int8 multiply-adds where float32 does one, so the quantized network
runs about three times faster than the float one. Quantization needs calibration photographs (the
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

from iweblens.inference.engines.openvino import int8_path, int8_sidecar
from iweblens.inference.images import decode_image
from iweblens.inference.letterbox import letterbox
from iweblens.models.store import ModelPaths, sha256_of

CALIBRATION_COUNT = 64


def calibration_set(folder: Path, count: int = CALIBRATION_COUNT) -> list[Path]:
    """The first ``count`` JPEGs of a folder by file name, so a run can be repeated exactly."""
    return sorted(folder.glob("*.jpg"))[:count]


def quantize(paths: ModelPaths, images: Sequence[Path], input_size: int = 416) -> Path:
    """Quantize the converted graph with activation ranges measured on ``images``; cache it."""
    import nncf  # optional dependency: the `int8` extra
    import openvino as ov

    from iweblens.models.onnx_export import ensure_onnx  # needs the engines extra

    source = ensure_onnx(paths)
    blobs = [letterbox(decode_image(image.read_bytes()), input_size)[0] for image in images]
    # Measured on the 128 COCO photographs (F1 against opencv on the judged half): the defaults
    # give 0.89; leaving the score x objectness products in float gives 0.93; full bias
    # correction 0.94. Keeping the first layer or the heads in float, quantile or histogram
    # ranges, and NNCF's accuracy control (which reverts every layer) bought nothing more.
    quantized = nncf.quantize(
        ov.Core().read_model(str(source)),
        nncf.Dataset(blobs),
        subset_size=len(blobs),
        preset=nncf.QuantizationPreset.MIXED,
        fast_bias_correction=False,
        ignored_scope=nncf.IgnoredScope(types=["Multiply"]),
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
    }
    int8_sidecar(target).write_text(json.dumps(provenance, indent=2) + "\n")
    return target
