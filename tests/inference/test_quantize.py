"""The INT8 recipe: which layers stay float, and a real quantization of the committed photographs.

The quantization itself needs NNCF (the ``int8`` extra) and is skipped without it; the float-layer
choice needs only OpenVINO. Agreement is checked loosely here (six photographs cannot measure an
F1 to 0.01); the bench judges it on 64 held-apart photographs.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from iweblens.bench.agreement import F1Tally
from iweblens.inference.detector import Detector
from iweblens.inference.engines import create_engine
from iweblens.models.store import ModelPaths, sha256_of

pytest.importorskip("openvino")


def test_the_first_two_convolutions_and_the_two_heads_stay_float(model_paths: ModelPaths) -> None:
    import openvino as ov

    from iweblens.inference.quantize import float_convolutions
    from iweblens.models.onnx_export import ensure_onnx

    model = ov.Core().read_model(str(ensure_onnx(model_paths)))
    kept = float_convolutions(model)
    convolutions = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    assert len(convolutions) == 13
    heads = [convolutions[9], convolutions[12]]
    assert kept == [op.get_friendly_name() for op in (*convolutions[:2], *heads)]
    assert convolutions[0].input_value(0).get_node().get_type_name() == "Parameter"
    for head in heads:  # the heads' outputs become the rows: 3 anchors x (5 + 80 classes)
        assert head.output(0).get_partial_shape()[1].get_length() == 255


@pytest.mark.skipif(not importlib.util.find_spec("nncf"), reason="needs NNCF: the int8 extra")
def test_quantized_on_the_committed_photographs_it_agrees_with_opencv(
    tmp_path: Path, model_paths: ModelPaths, photos: list[Path]
) -> None:
    from iweblens.inference.quantize import calibration_set, quantize

    for source in (model_paths.cfg, model_paths.weights, model_paths.names):
        shutil.copy(source, tmp_path / source.name)
    paths = ModelPaths(
        cfg=tmp_path / model_paths.cfg.name,
        weights=tmp_path / model_paths.weights.name,
        names=tmp_path / model_paths.names.name,
    )
    calibration = calibration_set(photos[0].parent, 5)
    target = quantize(paths, calibration)
    provenance = json.loads(target.with_name(target.name + ".json").read_text())
    assert provenance["calibration_images"] == [image.name for image in calibration]
    assert provenance["weights_sha256"] == sha256_of(target.with_suffix(".bin"))

    labels = paths.labels()
    opencv = Detector(create_engine("opencv", paths), labels)
    int8 = Detector(create_engine("openvino-int8", paths), labels)
    tally = F1Tally()
    for photo in photos:
        tally.add(opencv.detect_bytes(photo.read_bytes()), int8.detect_bytes(photo.read_bytes()))
    assert tally.true_positives >= 10
    assert tally.f1 >= 0.9
