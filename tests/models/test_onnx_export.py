"""The darknet-to-ONNX converter on small synthetic networks: its cfg parser, its weights reader,
its batch-norm folding, its graph against OpenCV's darknet importer, and its cache key.

The real YOLOv3-tiny and YOLOv4-tiny conversions are checked against OpenCV in
``tests/inference/test_engines.py``;
here every network is a few layers with random weights written in darknet's format by the test,
so each rule is checked in milliseconds and on inputs the pinned files never exercise.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from iweblens.models.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    SIDECAR_SUFFIX,
    build_model,
    ensure_onnx,
    graph_input_size,
    onnx_path,
    parse_cfg,
)
from iweblens.models.store import ModelPaths, sha256_of

SIDE = 64  # the synthetic networks' [net] width and height
CLASSES = 2
ANCHORS = "10,14,  23,27,  37,58,  81,82,  135,169,  344,319"
HEAD_FILTERS = 3 * (5 + CLASSES)


@dataclass(frozen=True)
class Conv:
    """What a convolutional layer reads from the weights file, in darknet's order."""

    filters: int
    channels: int  # of its input
    size: int
    batch_normalize: bool


# Two scales like YOLOv3-tiny: conv/maxpool down to a head, then a route back, an upsample and a
# two-way route (concatenation) into a second head. Layer indices are counted from 0 after [net].
TINY_CFG = f"""[net]
# a comment line, and an option with spaces around its '='
width={SIDE}
height = {SIDE}
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
batch_normalize=1
filters=16
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[convolutional]
size=1
stride=1
pad=1
filters={HEAD_FILTERS}
activation=linear

[yolo]
mask = 0,1,2
anchors = {ANCHORS}
classes={CLASSES}
num=6

[route]
layers = -3

[upsample]
stride=2

[route]
layers = -1, 0

[convolutional]
size=1
stride=1
pad=1
filters={HEAD_FILTERS}
activation=linear

[yolo]
mask = 3,4,5
anchors = {ANCHORS}
classes={CLASSES}
num=6
"""
TINY_CONVS = (
    Conv(8, 3, 3, True),
    Conv(16, 8, 3, True),
    Conv(HEAD_FILTERS, 16, 1, False),
    Conv(HEAD_FILTERS, 16 + 8, 1, False),
)

# YOLOv4-tiny's shape in miniature: a stride-2 convolution, a CSP block (a grouped route taking
# one channel group, two routes concatenating), a maxpool to the first head; then a route back, an
# upsample and a route naming its layer by absolute index into the second head. Both heads carry
# scale_x_y and the training-only options YOLOv4-tiny's cfg has.
V4_TRAINING_OPTIONS = """jitter=.3
cls_normalizer=1.0
iou_normalizer=0.07
iou_loss=ciou
ignore_thresh = .7
truth_thresh = 1
random=0
resize=1.5
nms_kind=greedynms
beta_nms=0.6"""


def v4_cfg(groups: int = 2, group_id: int = 1, scale_x_y: float = 1.05) -> str:
    """The miniature YOLOv4-tiny with its grouped route and its heads' ``scale_x_y``."""

    def conv(filters: int, size: int, stride: int = 1) -> str:
        return (
            f"[convolutional]\nbatch_normalize=1\nfilters={filters}\nsize={size}\n"
            f"stride={stride}\npad=1\nactivation=leaky\n\n"
        )

    def head(mask: str) -> str:
        return (
            f"[convolutional]\nsize=1\nstride=1\npad=1\nfilters={HEAD_FILTERS}\n"
            f"activation=linear\n\n[yolo]\nmask = {mask}\nanchors = {ANCHORS}\n"
            f"classes={CLASSES}\nnum=6\nscale_x_y = {scale_x_y}\n{V4_TRAINING_OPTIONS}\n\n"
        )

    return (
        f"[net]\nwidth={SIDE}\nheight={SIDE}\nchannels=3\n\n"
        + conv(8, 3, stride=2)  # 0
        + conv(8, 3)  # 1
        + f"[route]\nlayers=-1\ngroups={groups}\ngroup_id={group_id}\n\n"  # 2
        + conv(4, 3)  # 3
        + "[route]\nlayers = -1,-2\n\n"  # 4: layers 3 and 2
        + conv(8, 1)  # 5
        + "[route]\nlayers = -5,-1\n\n"  # 6: layers 1 and 5
        + "[maxpool]\nsize=2\nstride=2\n\n"  # 7
        + head("3,4,5")  # 8, 9
        + "[route]\nlayers = -3\n\n"  # 10: layer 7
        + conv(8, 1)  # 11
        + "[upsample]\nstride=2\n\n"  # 12
        + "[route]\nlayers = -1, 5\n\n"  # 13
        + head("1,2,3")  # 14, 15
    )


def v4_convs(groups: int = 2) -> tuple[Conv, ...]:
    return (
        Conv(8, 3, 3, True),
        Conv(8, 8, 3, True),
        Conv(4, 8 // groups, 3, True),
        Conv(8, 4 + 8 // groups, 1, True),
        Conv(HEAD_FILTERS, 16, 1, False),
        Conv(8, 16, 1, True),
        Conv(HEAD_FILTERS, 16, 1, False),
    )


def darknet_weights(
    convs: tuple[Conv, ...], seed: int, version: tuple[int, int] = (0, 2), extra: int = 0
) -> bytes:
    """A darknet weights file for ``convs``: the header of format ``version`` (its "images seen"
    counter is int64 from 0.2 on, int32 before), then per layer the biases, the batch norm's
    scales, means and variances, and the kernels; ``extra`` floats more (negative: fewer)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for conv in convs:
        arrays.append(rng.normal(0, 0.1, conv.filters))
        if conv.batch_normalize:
            arrays.append(rng.uniform(0.5, 1.5, conv.filters))
            arrays.append(rng.normal(0, 0.1, conv.filters))
            arrays.append(rng.uniform(0.5, 2.0, conv.filters))
        arrays.append(rng.normal(0, 0.2, conv.filters * conv.channels * conv.size**2))
    values = np.concatenate(arrays).astype("<f4")
    values = np.concatenate([values, np.ones(max(extra, 0), "<f4")])[: values.size + extra]
    major, minor = version
    seen = struct.pack("<q" if major * 10 + minor >= 2 else "<i", 12345)
    return struct.pack("<iii", major, minor, 0) + seen + values.tobytes()


def write_model(
    folder: Path, cfg: str = TINY_CFG, weights: bytes | None = None, seed: int = 0
) -> ModelPaths:
    """``cfg`` and ``weights`` (the tiny net's, from ``seed``, when None) as a model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = ModelPaths(folder / "net.cfg", folder / "net.weights", folder / "net.names")
    paths.cfg.write_text(cfg)
    paths.weights.write_bytes(darknet_weights(TINY_CONVS, seed) if weights is None else weights)
    paths.names.write_text("".join(f"class{i}\n" for i in range(CLASSES)))
    return paths


def run_onnx(model: onnx.ModelProto, blob: np.ndarray, outputs: list[str] | None = None) -> list:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(outputs, {INPUT_NAME: blob})


def opencv_rows(paths: ModelPaths, blob: np.ndarray) -> np.ndarray:
    network = cv2.dnn.readNetFromDarknet(str(paths.cfg), str(paths.weights))
    network.setInput(blob)
    return np.vstack(network.forward(network.getUnconnectedOutLayersNames()))


def random_blob(side: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 1, (1, 3, side, side)).astype(np.float32)


# The cfg parser


def test_cfg_parser_keeps_sections_in_order_with_their_options() -> None:
    sections = parse_cfg(TINY_CFG)
    assert [section.kind for section in sections] == [
        "net",
        *("convolutional", "maxpool", "convolutional", "maxpool", "convolutional", "yolo"),
        *("route", "upsample", "route", "convolutional", "yolo"),
    ]
    net = sections[0]
    assert net.options == {"width": str(SIDE), "height": str(SIDE), "channels": "3"}
    assert net.integer("width", 0) == SIDE and net.integer("batch", 1) == 1
    assert sections[6].ints("mask") == [0, 1, 2]
    assert sections[6].ints("anchors")[-2:] == [344, 319]
    assert sections[9].ints("layers") == [-1, 0]


def test_cfg_parser_drops_comments_blank_lines_and_whitespace() -> None:
    sections = parse_cfg(
        "\n  [net]  \n; darknet's other comment\n\twidth = 32   # the side\n\n# height=64\n"
        "height=32\n[shortcut]\nfrom=-3\nactivation=linear\n"
    )
    assert [(section.kind, section.options) for section in sections] == [
        ("net", {"width": "32", "height": "32"}),
        ("shortcut", {"from": "-3", "activation": "linear"}),
    ]


def test_a_repeated_key_takes_its_last_value_as_opencv_does(tmp_path: Path) -> None:
    # The same network read by both: the first convolution's activation given twice, in both
    # orders (leaky and linear give different rows, so each side's choice shows).
    blob = random_blob(SIDE)
    for first, last in (("leaky", "linear"), ("linear", "leaky")):
        cfg = TINY_CFG.replace("activation=leaky", f"activation={first}\nactivation={last}", 1)
        assert parse_cfg(cfg)[1].options["activation"] == last
        paths = write_model(tmp_path / first, cfg)
        (rows,) = run_onnx(build_model(paths.cfg, paths.weights), blob)
        np.testing.assert_allclose(rows, opencv_rows(paths, blob), atol=1e-4)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[net]\nwidth=32\nheight 32\n", 3),  # no '=': OpenCV's importer refuses it too
        ("width=32\n[net]\n", 1),  # an option before any section
        ("[net]\n=32\n", 2),  # a value without its key
    ],
)
def test_a_malformed_cfg_line_is_refused_naming_its_line(text: str, line: int) -> None:
    with pytest.raises(ValueError, match=rf"^cfg line {line}: "):
        parse_cfg(text)


def test_a_layer_the_converter_cannot_build_is_refused_by_name(tmp_path: Path) -> None:
    # YOLOv3 (not tiny) has [shortcut] layers; the converter knows only the tiny net's kinds.
    cfg = TINY_CFG.replace("[upsample]\nstride=2", "[shortcut]\nfrom=-2\nactivation=linear")
    paths = write_model(tmp_path, cfg)
    with pytest.raises(ValueError, match=r"unsupported darknet layer \[shortcut\]"):
        build_model(paths.cfg, paths.weights)


# The weights reader


@pytest.mark.parametrize("version", [(0, 1), (0, 2), (1, 0)])
def test_both_weights_headers_are_read(tmp_path: Path, version: tuple[int, int]) -> None:
    blob = random_blob(SIDE)
    paths = write_model(tmp_path, weights=darknet_weights(TINY_CONVS, 0, version))
    (rows,) = run_onnx(build_model(paths.cfg, paths.weights), blob)
    np.testing.assert_allclose(rows, opencv_rows(paths, blob), atol=1e-4)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (-1, "the weights file is shorter than the cfg requires"),
        (1, "1 weights left over: cfg and weights disagree"),
        (1000, "1000 weights left over: cfg and weights disagree"),
    ],
)
def test_weights_must_match_the_cfg_to_the_float(tmp_path: Path, extra: int, message: str) -> None:
    paths = write_model(tmp_path, weights=darknet_weights(TINY_CONVS, 0, extra=extra))
    with pytest.raises(ValueError, match=f"^{message}$"):
        build_model(paths.cfg, paths.weights)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (2, r"not a whole number of float32 values \(2 bytes over\)"),
        (-2, r"not a whole number of float32 values \(2 bytes over\)"),
        ("header", "shorter than darknet's header"),
    ],
)
def test_a_weights_file_of_a_ragged_length_is_refused_clearly(
    tmp_path: Path, cut: int | str, message: str
) -> None:
    whole = darknet_weights(TINY_CONVS, 0)
    data = {2: whole + b"\0\0", -2: whole[:-2], "header": whole[:14]}[cut]
    paths = write_model(tmp_path, weights=data)
    with pytest.raises(ValueError, match=f"^{paths.weights}: .*{message}"):
        build_model(paths.cfg, paths.weights)


# Batch-norm folding and the graph


def convolve(blob: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Direct 2-D cross-correlation, stride 1, zero padding ``size // 2``: NCHW in, NCHW out."""
    size = kernel.shape[-1]
    padded = np.pad(blob, [(0, 0), (0, 0), (size // 2,) * 2, (size // 2,) * 2])
    windows = sliding_window_view(padded, (size, size), axis=(2, 3))  # N C H W k k
    return np.einsum("nchwij,fcij->nfhw", windows, kernel)


def test_batch_norm_is_folded_into_the_convolution_exactly(tmp_path: Path) -> None:
    """The first convolution's output in the graph equals darknet's own sequence, computed in
    float64 from the file's arrays: convolve, normalise by the mean and standard deviation (plus
    darknet's 1e-6), scale, add the bias, leaky ReLU."""
    paths = write_model(tmp_path)
    model = build_model(paths.cfg, paths.weights)
    first = TINY_CONVS[0]
    values = np.frombuffer(paths.weights.read_bytes(), "<f4", offset=20).astype(np.float64)
    bias, scale, mean, variance = (
        part[None, :, None, None] for part in values[: 4 * first.filters].reshape(4, -1)
    )
    kernel = values[4 * first.filters :][: first.filters * first.channels * first.size**2]
    activation = next(node for node in model.graph.node if node.op_type == "LeakyRelu")
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(activation.output[0], onnx.TensorProto.FLOAT, None)
    )
    blob = random_blob(SIDE)
    (actual,) = run_onnx(model, blob, [activation.output[0]])
    convolved = convolve(
        blob.astype(np.float64), kernel.reshape(first.filters, first.channels, 3, 3)
    )
    normalised = (convolved - mean) / (np.sqrt(variance) + 1e-6) * scale + bias
    expected = np.where(normalised > 0, normalised, 0.1 * normalised)
    assert actual.shape == (1, first.filters, SIDE, SIDE)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


@pytest.mark.parametrize("side", [SIDE, 96, 32])
def test_the_tiny_network_gives_opencvs_rows_at_any_input_size(tmp_path: Path, side: int) -> None:
    """Every row (boxes, objectness, floored class scores) of both heads, for the cfg's size and
    for others: OpenCV scales the anchors by the input it is given, the graph by its size."""
    paths = write_model(tmp_path)
    model = build_model(paths.cfg, paths.weights, side)
    blob = random_blob(side)
    (rows,) = run_onnx(model, blob)
    expected = opencv_rows(paths, blob)
    # Two heads: (S/2)^2 and S^2 cells, three anchors each.
    assert rows.shape == expected.shape == (3 * ((side // 2) ** 2 + side**2), 5 + CLASSES)
    assert [output.name for output in model.graph.output] == [OUTPUT_NAME]
    assert (expected[:, 5:] > 0).any() and (expected[:, 5:] == 0).any()  # the floor is exercised
    np.testing.assert_allclose(rows, expected, atol=1e-4)


@pytest.mark.parametrize("side", [SIDE, 96])
@pytest.mark.parametrize(
    ("groups", "group_id", "scale_x_y"), [(2, 1, 1.05), (2, 0, 1.05), (4, 3, 2.0)]
)
def test_the_yolov4_tiny_blocks_give_opencvs_rows(
    tmp_path: Path, side: int, groups: int, group_id: int, scale_x_y: float
) -> None:
    """A grouped route takes its channel group, ``scale_x_y`` stretches the centres, the
    training-only options change nothing: every row as OpenCV's, at the cfg's size and another."""
    paths = write_model(
        tmp_path, v4_cfg(groups, group_id, scale_x_y), darknet_weights(v4_convs(groups), 0)
    )
    blob = random_blob(side)
    (rows,) = run_onnx(build_model(paths.cfg, paths.weights, side), blob)
    expected = opencv_rows(paths, blob)
    # Heads at strides 4 and 2: (S/4)^2 and (S/2)^2 cells, three anchors each.
    assert rows.shape == expected.shape == (3 * ((side // 4) ** 2 + (side // 2) ** 2), 5 + CLASSES)
    np.testing.assert_allclose(rows, expected, atol=1e-4)
    # The tolerance tells these centres from unstretched ones (the random weights keep most
    # sigmoids near 0.5, where the stretch moves a centre least).
    plain = write_model(
        tmp_path / "plain",
        paths.cfg.read_text().replace(f"scale_x_y = {scale_x_y}", ""),
        paths.weights.read_bytes(),
    )
    assert not np.allclose(rows, opencv_rows(plain, blob), atol=1e-4)


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("layers=-1,-2\ngroups=2\ngroup_id=1", "with groups takes a single layer"),
        ("layers=-1\ngroups=2\ngroup_id=2", "group_id=2 is not one of groups=2"),
        ("layers=-1\ngroups=3\ngroup_id=1", "groups=3 does not divide 8 channels"),
    ],
)
def test_a_grouped_route_opencv_cannot_run_as_darknet_does_is_refused(
    tmp_path: Path, route: str, message: str
) -> None:
    # OpenCV cannot load the first two; the third it slices on whole channels where darknet cuts
    # across them, so the two programs disagree.
    cfg = v4_cfg().replace("layers=-1\ngroups=2\ngroup_id=1", route)
    paths = write_model(tmp_path, cfg, darknet_weights(v4_convs(), 0))
    with pytest.raises(ValueError, match=rf"^\[route\] {message}$"):
        build_model(paths.cfg, paths.weights)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("new_coords=1", "new_coords is not supported"),
        ("nms_threshold=0.4", "nms_threshold is not supported"),
        ("thresh=0.3", "thresh must be 0.2, the rows' score floor"),
    ],
)
def test_a_yolo_option_that_changes_opencvs_rows_is_refused(
    tmp_path: Path, option: str, message: str
) -> None:
    """Each of these moves OpenCV's rows (another box decode, NMS inside the layer, another
    floor) where the graph would not follow."""
    blob = random_blob(SIDE)
    cfg = TINY_CFG.replace("num=6", f"num=6\n{option}", 1)
    paths = write_model(tmp_path, cfg)
    assert (
        np.abs(opencv_rows(paths, blob) - opencv_rows(write_model(tmp_path / "plain"), blob)).max()
        > 1e-2
    )
    with pytest.raises(ValueError, match=rf"^\[yolo\] {message}$"):
        build_model(paths.cfg, paths.weights)


@pytest.mark.parametrize("options", ["size=2\nstride=2", "size=2", "stride=2", ""])
def test_a_maxpool_takes_opencvs_defaults(tmp_path: Path, options: str) -> None:
    """OpenCV's importer takes size 2 and stride 2 for what the cfg leaves out."""
    cfg = TINY_CFG.replace("[maxpool]\nsize=2\nstride=2", f"[maxpool]\n{options}", 1)
    paths = write_model(tmp_path, cfg)
    blob = random_blob(SIDE)
    (rows,) = run_onnx(build_model(paths.cfg, paths.weights), blob)
    np.testing.assert_allclose(rows, opencv_rows(paths, blob), atol=1e-4)


# The cache and its sidecar


def inode(path: Path) -> int:
    # Each conversion is written to a new file renamed over the old one: a new inode.
    return path.stat().st_ino


def test_the_cache_rebuilds_only_when_its_key_changes(tmp_path: Path) -> None:
    paths = write_model(tmp_path)
    target = ensure_onnx(paths)
    sidecar = target.with_name(target.name + SIDECAR_SUFFIX)
    assert target == onnx_path(paths) == onnx_path(paths, SIDE)
    assert graph_input_size(paths) == SIDE
    record = json.loads(sidecar.read_text())
    assert record["input_size"] == SIDE
    assert record["weights_sha256"] == sha256_of(paths.weights)
    assert record["cfg_sha256"] == sha256_of(paths.cfg)
    first = inode(target)

    # Unchanged sources and size, whether the size is implied or named: the same file.
    assert ensure_onnx(paths) == target and inode(target) == first
    assert ensure_onnx(paths, SIDE) == target and inode(target) == first

    # Another size: its own file and sidecar; the cfg size's conversion is left alone.
    other = ensure_onnx(paths, 96)
    assert other == onnx_path(paths, 96) != target
    assert json.loads(other.with_name(other.name + SIDECAR_SUFFIX).read_text())["input_size"] == 96
    assert inode(target) == first
    assert onnx.load(str(other)).graph.input[0].type.tensor_type.shape.dim[2].dim_value == 96

    # New weights (same size, so only their hash tells): rebuilt, and the new graph is theirs.
    paths.weights.write_bytes(darknet_weights(TINY_CONVS, seed=7))
    assert ensure_onnx(paths) == target and inode(target) != first
    assert json.loads(sidecar.read_text())["weights_sha256"] == sha256_of(paths.weights)
    blob = random_blob(SIDE)
    (rows,) = run_onnx(onnx.load(str(target)), blob)
    np.testing.assert_allclose(rows, opencv_rows(paths, blob), atol=1e-4)

    # A changed cfg (a comment only: the hash is the key, not the meaning): rebuilt.
    second = inode(target)
    paths.cfg.write_text(TINY_CFG + "# retrained\n")
    ensure_onnx(paths)
    assert inode(target) != second
    assert json.loads(sidecar.read_text())["cfg_sha256"] == sha256_of(paths.cfg)


@pytest.mark.parametrize("damage", ["no sidecar", "unreadable sidecar", "no model"])
def test_an_interrupted_conversion_is_redone(tmp_path: Path, damage: str) -> None:
    paths = write_model(tmp_path)
    target = ensure_onnx(paths)
    sidecar = target.with_name(target.name + SIDECAR_SUFFIX)
    record = sidecar.read_text()
    before = inode(target)
    if damage == "no sidecar":
        sidecar.unlink()
    elif damage == "unreadable sidecar":
        sidecar.write_text(record[: len(record) // 2])
    else:
        target.unlink()
    assert ensure_onnx(paths) == target
    # (An unlinked model's inode number may be reused by its replacement.)
    assert target.is_file() and (damage == "no model" or inode(target) != before)
    assert sidecar.read_text() == record
    onnx.checker.check_model(onnx.load(str(target)))
