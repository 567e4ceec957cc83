"""The check of a darknet model folder: the real models pass with their exact sizes, each broken
copy fails naming its file and fault, and the cut-down oracle agrees with the full model."""

from __future__ import annotations

import re
import shutil
import struct
from pathlib import Path

import pytest
from cutdown import cut_down

from iweblens.detection import Detection, DetectionParams
from iweblens.inference.detector import Detector
from iweblens.inference.engines.opencv import OpenCVEngine
from iweblens.models.darknet import (
    CheckedModel,
    DarknetModelError,
    check_model,
    header_size,
    layer_value_counts,
    parse_cfg,
    weights_file_size,
)
from iweblens.models.store import ModelPaths

YOLOV3_TINY_BYTES = 35_434_956
YOLOV4_TINY_BYTES = 24_251_276


def check(paths: ModelPaths) -> CheckedModel:
    return check_model(paths.cfg, paths.weights, paths.names)


def with_files(
    paths: ModelPaths,
    folder: Path,
    *,
    cfg: str | bytes | None = None,
    names: str | None = None,
) -> ModelPaths:
    """``paths`` with the files given written into ``folder`` in their place."""
    cfg_path, names_path = paths.cfg, paths.names
    if cfg is not None:
        cfg_path = folder / paths.cfg.name
        if isinstance(cfg, bytes):
            cfg_path.write_bytes(cfg)
        else:
            cfg_path.write_text(cfg)
    if names is not None:
        names_path = folder / paths.names.name
        names_path.write_text(names)
    return ModelPaths(cfg_path, paths.weights, names_path)


def with_weights(paths: ModelPaths, folder: Path, cut: int = 0, extra: bytes = b"") -> ModelPaths:
    """``paths`` with a copy of the weights ``cut`` bytes shorter, then ``extra`` appended."""
    weights = folder / paths.weights.name
    shutil.copy(paths.weights, weights)
    with weights.open("r+b") as handle:
        handle.truncate(weights.stat().st_size - cut)
        handle.seek(0, 2)
        handle.write(extra)
    return ModelPaths(paths.cfg, weights, paths.names)


def fault(paths: ModelPaths, named: Path, fragment: str) -> None:
    """Assert that the check fails with a message naming the file ``named`` and holding
    ``fragment``."""
    with pytest.raises(DarknetModelError, match=f"^{re.escape(f'{named}: ')}") as raised:
        check(paths)
    assert fragment in str(raised.value)


def test_yolov3_tiny_passes_with_its_exact_size(model_paths: ModelPaths) -> None:
    assert check(model_paths) == CheckedModel(80, 416, tuple(model_paths.labels()))
    sections = parse_cfg(model_paths.cfg.read_text())
    assert model_paths.weights.stat().st_size == YOLOV3_TINY_BYTES
    assert weights_file_size(sections, 0, 2) == YOLOV3_TINY_BYTES


def test_yolov4_tiny_with_grouped_routes_passes_with_its_exact_size(
    yolov4_tiny_paths: ModelPaths,
) -> None:
    paths = yolov4_tiny_paths
    assert check(paths) == CheckedModel(80, 416, tuple(paths.labels()))
    assert paths.weights.stat().st_size == YOLOV4_TINY_BYTES
    assert weights_file_size(parse_cfg(paths.cfg.read_text()), 0, 2) == YOLOV4_TINY_BYTES


def test_the_seen_counter_is_int64_from_format_0_2() -> None:
    assert [header_size(0, 1), header_size(0, 2), header_size(1, 0)] == [16, 20, 20]


def test_layers_read_in_darknets_order_and_routes_pass_channels_on() -> None:
    sections = parse_cfg(
        "[net]\nwidth=64\nheight=64\nchannels=3\n"
        "[convolutional]\nbatch_normalize=1\nfilters=8\nsize=3\n"  # 0: 8 x (4 + 3*9)
        "[maxpool]\nsize=2\nstride=2\n"  # 1: 8 channels
        "[route]\nlayers=-1\ngroups=2\ngroup_id=1\n"  # 2: the second half, 4 channels
        "[convolutional]\nfilters=6\nsize=1\n"  # 3: 6 x (1 + 4)
        "[route]\nlayers=-1,0\n"  # 4: 6 + 8 channels
        "[convolutional]\nfilters=4\nsize=1\ngroups=2\n"  # 5: 4 x (1 + 14/2)
        "[upsample]\nstride=2\n"
        "[convolutional]\nfilters=14\nsize=3\n"  # 7: 14 x (1 + 4*9)
        "[yolo]\nmask=0,1\nnum=2\nanchors=1,1,2,2\nclasses=2\n"
    )
    assert layer_value_counts(sections) == [8 * 31, 0, 0, 6 * 5, 0, 4 * 8, 0, 14 * 37, 0]
    assert weights_file_size(sections, 0, 1) == 16 + 4 * (248 + 30 + 32 + 518)


def test_a_format_0_1_file_has_a_4_byte_counter(model_paths: ModelPaths, tmp_path: Path) -> None:
    data = bytearray(model_paths.weights.read_bytes())
    struct.pack_into("<i", data, 4, 1)
    older = tmp_path / "older.weights"
    older.write_bytes(data[:16] + data[20:])
    assert check(ModelPaths(model_paths.cfg, older, model_paths.names)).classes == 80
    older.write_bytes(data)
    fault(
        ModelPaths(model_paths.cfg, older, model_paths.names),
        older,
        f"has {YOLOV3_TINY_BYTES} bytes; yolov3-tiny.cfg needs {YOLOV3_TINY_BYTES - 4} "
        "(a 16-byte header of format 0.1",
    )


@pytest.mark.parametrize(
    ("cut", "extra"),
    [(4, b""), (1000, b""), (0, b"\0"), (4, b"\0" * 8)],
    ids=["a-value-short", "truncated", "a-byte-over", "a-value-swapped-for-two"],
)
def test_weights_of_the_wrong_size_are_refused(
    model_paths: ModelPaths, tmp_path: Path, cut: int, extra: bytes
) -> None:
    broken = with_weights(model_paths, tmp_path, cut, extra)
    has = YOLOV3_TINY_BYTES - cut + len(extra)
    fault(broken, broken.weights, f"has {has} bytes; yolov3-tiny.cfg needs {YOLOV3_TINY_BYTES}")


def test_weights_shorter_than_the_header_or_missing_are_refused(
    model_paths: ModelPaths, tmp_path: Path
) -> None:
    stub = tmp_path / "stub.weights"
    stub.write_bytes(b"\0" * 5)
    fault(ModelPaths(model_paths.cfg, stub, model_paths.names), stub, "has 5 bytes, fewer than")
    missing = tmp_path / "missing.weights"
    fault(
        ModelPaths(model_paths.cfg, missing, model_paths.names),
        missing,
        "cannot be read (No such file or directory)",
    )


def without_line(text: str, index: int) -> str:
    lines = text.splitlines(keepends=True)
    return "".join(lines[:index] + lines[index + 1 :])


def test_names_must_match_the_class_count(model_paths: ModelPaths, tmp_path: Path) -> None:
    text = model_paths.names.read_text()
    extra = text.rstrip("\n") + "\nextra\n"
    for names, count in [(without_line(text, 7), 79), (extra, 81), ("\n \n", 0)]:
        broken = with_files(model_paths, tmp_path, names=names)
        fault(broken, broken.names, f"has {count} names; yolov3-tiny.cfg has classes=80")


def test_names_are_the_stripped_non_empty_lines(model_paths: ModelPaths, tmp_path: Path) -> None:
    labels = model_paths.labels()
    padded = "\n".join(f"  {label}\t" for label in labels).replace("\n", "\n\n", 3)
    model = check(with_files(model_paths, tmp_path, names=padded))
    assert model.labels == tuple(labels)


def edited(text: str, old: str, new: str, count: int = 1) -> str:
    assert old in text
    return text.replace(old, new, count)


CFG_FAULTS = {
    "garbage": (lambda _: "this is no cfg\n", "cfg line 1: 'this is no cfg' is not key=value"),
    "binary": (lambda _: b"\x7fELF\xff\xfe", "is not UTF-8 text (byte 4 is 0xff)"),
    "empty": (lambda _: "# nothing\n", "has no [section]; a cfg starts with [net]"),
    "no-net-line": (lambda t: edited(t, "[net]\n", ""), "comes before any [section]"),
    "net-not-first": (
        lambda t: edited(t, "[net]", "[convolutional]"),
        "the first section is [convolutional], not [net]",
    ),
    "no-yolo": (
        lambda t: re.sub(r"\[yolo\][^\[]*", "", t),
        "no [yolo] layer; a detector needs at least one",
    ),
    "unsupported-layer": (
        lambda t: edited(t, "[maxpool]", "[avgpool]"),
        "layer 1 [avgpool] is not supported (only [convolutional], [maxpool], [upsample], "
        "[route], [yolo])",
    ),
    "filters-vs-classes": (
        lambda t: edited(t, "classes=80", "classes=3"),
        "layer 15 [convolutional] has filters=255; the layer 16 [yolo] after it needs "
        "3 x (5 + 3) = 24 (3 anchors, classes=3)",
    ),
    "classes-disagree": (
        lambda t: edited(edited(t, "mask = 3,4,5", "mask = 0,1,2,3,4"), "classes=80", "classes=46"),
        "the [yolo] layers disagree: classes=46 in layer 16, classes=80 in layer 23",
    ),
    "not-square": (
        lambda t: edited(t, "height=416", "height=320"),
        "the [net] input is 416x320; it must be square",
    ),
    "not-a-multiple-of-32": (
        lambda t: edited(t, "width=416\nheight=416", "width=400\nheight=400"),
        "the [net] width=400 is not a multiple of 32",
    ),
    "not-an-integer": (
        lambda t: edited(t, "filters=255", "filters=many"),
        "layer 15 [convolutional]: filters=many is not an integer",
    ),
    "route-ahead": (
        lambda t: edited(t, "layers = -1, 8", "layers = -1, 30"),
        "layer 20 [route]: layers= names 30, not a layer before it",
    ),
}


@pytest.mark.parametrize("name", CFG_FAULTS)
def test_a_broken_cfg_is_refused(model_paths: ModelPaths, tmp_path: Path, name: str) -> None:
    change, fragment = CFG_FAULTS[name]
    broken = with_files(model_paths, tmp_path, cfg=change(model_paths.cfg.read_text()))
    fault(broken, broken.cfg, fragment)


# --- the cut-down oracle ---

CUTS = [("dog", "person", "car"), ("person",)]


@pytest.fixture(scope="module")
def full_detector(model_paths: ModelPaths) -> Detector:
    return Detector(OpenCVEngine(model_paths), model_paths.labels())


@pytest.fixture(scope="module", params=CUTS, ids="-".join)
def cut(
    request: pytest.FixtureRequest,
    model_paths: ModelPaths,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[tuple[str, ...], ModelPaths]:
    keep: tuple[str, ...] = request.param
    return keep, cut_down(model_paths, keep, tmp_path_factory.mktemp("cut"))


def on_the_wire(detections: list[Detection]) -> list[tuple[str, str, int, int, int, int]]:
    """Label, accuracy as the assignment's answer writes it (wire.render_detections), box."""
    return [
        (d.label, f"{d.confidence * 100:.2f}", d.left, d.top, d.width, d.height) for d in detections
    ]


def test_a_cut_down_model_passes_the_check(
    cut: tuple[tuple[str, ...], ModelPaths], model_paths: ModelPaths
) -> None:
    keep, paths = cut
    assert check(paths) == CheckedModel(len(keep), 416, keep)
    full, cut_lines = model_paths.cfg.read_text().splitlines(), paths.cfg.read_text().splitlines()
    changed = [(a, b) for a, b in zip(full, cut_lines, strict=True) if a != b]
    heads = f"filters={3 * (5 + len(keep))}"
    assert changed == [("filters=255", heads), ("classes=80", f"classes={len(keep)}")] * 2


def test_a_cut_down_model_finds_what_the_full_one_finds_of_its_classes(
    cut: tuple[tuple[str, ...], ModelPaths],
    full_detector: Detector,
    photos: list[Path],
    coco128: list[Path],
) -> None:
    keep, paths = cut
    detector = Detector(OpenCVEngine(paths), paths.labels())
    only = DetectionParams(classes=frozenset(keep))
    found = 0
    for photo in sorted(set(photos) | set(coco128)):
        data = photo.read_bytes()
        expected = full_detector.run(data, only).detections
        assert on_the_wire(detector.run(data).detections) == on_the_wire(expected), photo.name
        found += len(expected)
    assert found > 0
