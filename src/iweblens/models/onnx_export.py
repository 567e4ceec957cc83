"""Convert darknet YOLOv3-tiny and YOLOv4-tiny files to ONNX, in pure Python.

ONNX Runtime and OpenVINO (and their INT8 tooling) need an ONNX graph of the network. Taking
one from a model hub would mean trusting weights nobody pinned, so the graph is built here from
the sha256-pinned cfg and weights: batch norm is folded into the convolutions and the YOLO decode
is part of the graph, so the model's single output holds exactly the rows OpenCV's darknet
importer emits and every engine shares one postprocess.

The converted file is cached next to the model files with a sidecar recording the hashes of its
sources and the converter version; any change to either triggers a fresh conversion.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from iweblens.models.darknet import Section, parse_cfg
from iweblens.models.store import ModelPaths, sha256_of

# Bump whenever the graph this module builds changes, so cached conversions are rebuilt.
CONVERTER_VERSION = 2
SIDECAR_SUFFIX = ".json"
INPUT_NAME = "images"
OUTPUT_NAME = "rows"
# OpenCV's darknet importer folds batch norm with this epsilon (darknet adds 1e-6 to the std).
BATCH_NORM_EPS = 1e-6
LEAKY_SLOPE = 0.1
# OpenCV's region layer zeroes class scores at or below this; the graph does the same so its rows
# are interchangeable with OpenCV's.
SCORE_FLOOR = 0.2
OPSET = 13


class _WeightReader:
    """Reads float32 arrays from a darknet weights file in the order the layers consume them."""

    def __init__(self, path: Path) -> None:
        data = path.read_bytes()
        header = 12  # major, minor and revision, int32 each
        if len(data) >= header:
            major, minor, _revision = np.frombuffer(data, np.int32, 3)
            # The "images seen" counter grew from int32 to int64 in format 0.2.
            header += 8 if major * 10 + minor >= 2 else 4
        if len(data) < header:
            raise ValueError(f"{path}: {len(data)} bytes, shorter than darknet's header")
        if over := (len(data) - header) % 4:
            raise ValueError(
                f"{path}: the weights after the header are not a whole number of float32 values "
                f"({over} bytes over)"
            )
        self.values = np.frombuffer(data, np.float32, offset=header)
        self.position = 0

    def take(self, count: int) -> np.ndarray:
        if self.position + count > self.values.size:
            raise ValueError("the weights file is shorter than the cfg requires")
        chunk = self.values[self.position : self.position + count]
        self.position += count
        return chunk.copy()

    def finish(self) -> None:
        if self.position != self.values.size:
            raise ValueError(
                f"{self.values.size - self.position} weights left over: cfg and weights disagree"
            )


class _GraphBuilder:
    """Accumulates ONNX nodes and initializers with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.counter = 0

    def name(self, hint: str) -> str:
        self.counter += 1
        return f"{hint}_{self.counter}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        output = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
        return output


@dataclass(frozen=True)
class _Tensor:
    """A feature map in the graph being built: its name, channel count and (square) side."""

    name: str
    channels: int
    side: int


def _convolution(
    graph: _GraphBuilder, section: Section, source: _Tensor, weights: _WeightReader
) -> _Tensor:
    filters, size = section.integer("filters", 1), section.integer("size", 1)
    stride = section.integer("stride", 1)
    padding = size // 2 if section.integer("pad", 0) else section.integer("padding", 0)
    bias = weights.take(filters)
    kernel_count = filters * source.channels * size * size
    if section.integer("batch_normalize", 0):
        scale, mean, variance = weights.take(filters), weights.take(filters), weights.take(filters)
        factor = scale / np.sqrt(variance + np.float32(BATCH_NORM_EPS))
        kernel = weights.take(kernel_count).reshape(filters, -1) * factor[:, None]
        bias = bias - mean * factor
    else:
        kernel = weights.take(kernel_count)
    kernel = kernel.reshape(filters, source.channels, size, size).astype(np.float32)
    out = graph.op(
        "Conv",
        [source.name, graph.const("w", kernel), graph.const("b", bias.astype(np.float32))],
        kernel_shape=[size, size],
        strides=[stride, stride],
        pads=[padding] * 4,
    )
    activation = section.options.get("activation", "linear")
    if activation == "leaky":
        out = graph.op("LeakyRelu", [out], alpha=LEAKY_SLOPE)
    elif activation != "linear":
        raise ValueError(f"unsupported activation {activation!r}")
    return _Tensor(out, filters, (source.side + 2 * padding - size) // stride + 1)


def _maxpool(graph: _GraphBuilder, section: Section, source: _Tensor) -> _Tensor:
    # OpenCV's importer's defaults, not darknet's (stride 1, size = stride): the rows are OpenCV's.
    stride, size = section.integer("stride", 2), section.integer("size", 2)
    # darknet pads (size - 1) in total, size // 2 of it before: with size 2 all of it lands after,
    # which is how a 13x13 map stays 13x13 under a stride-1 pool.
    total = section.integer("padding", size - 1)
    before = total // 2
    out = graph.op(
        "MaxPool",
        [source.name],
        kernel_shape=[size, size],
        strides=[stride, stride],
        pads=[before, before, total - before, total - before],
    )
    return _Tensor(out, source.channels, (source.side + total - size) // stride + 1)


def _upsample(graph: _GraphBuilder, section: Section, source: _Tensor) -> _Tensor:
    stride = section.integer("stride", 2)
    scales = graph.const("scales", np.array([1, 1, stride, stride], np.float32))
    out = graph.op("Resize", [source.name, "", scales], mode="nearest")
    return _Tensor(out, source.channels, source.side * stride)


def _route(graph: _GraphBuilder, section: Section, picked: list[_Tensor]) -> _Tensor:
    """The routed layers' outputs concatenated on channels or, with ``groups``, channel slice
    ``group_id`` of ``groups`` equal slices of the one routed layer (YOLOv4-tiny's CSP blocks).

    Raises ``ValueError`` for a grouped route OpenCV's importer cannot run (several layers, a
    ``group_id`` outside the groups) or runs unlike darknet (channels the groups do not divide).
    """
    groups, group_id = section.integer("groups", 1), section.integer("group_id", 0)
    if groups > 1:
        if len(picked) > 1:
            raise ValueError("[route] with groups takes a single layer")
        if not 0 <= group_id < groups:
            raise ValueError(f"[route] group_id={group_id} is not one of groups={groups}")
        (source,) = picked
        if source.channels % groups:
            raise ValueError(f"[route] groups={groups} does not divide {source.channels} channels")
        width = source.channels // groups
        out = graph.op(
            "Slice",
            [
                source.name,
                graph.const("start", np.array([group_id * width], np.int64)),
                graph.const("end", np.array([(group_id + 1) * width], np.int64)),
                graph.const("axis", np.array([1], np.int64)),
            ],
        )
        return _Tensor(out, width, source.side)
    if len(picked) == 1:
        return picked[0]
    out = graph.op("Concat", [tensor.name for tensor in picked], axis=1)
    return _Tensor(out, sum(tensor.channels for tensor in picked), picked[0].side)


def _yolo_decode(
    graph: _GraphBuilder,
    section: Section,
    source: str,
    grid: int,
    input_size: int,
) -> str:
    """Turn one head's raw map into OpenCV's rows: boxes relative to the input, scores x obj.

    Options only training reads (``jitter``, ``iou_loss``, ``nms_kind``...) are ignored. Raises
    ``ValueError`` for those that change OpenCV's rows in a way the graph does not build:
    ``new_coords`` (another decode), ``nms_threshold`` (NMS inside the layer) and a ``thresh``
    other than ``SCORE_FLOOR``.
    """
    if section.integer("new_coords", 0):
        raise ValueError("[yolo] new_coords is not supported")
    if float(section.options.get("nms_threshold", 0)) > 0:
        raise ValueError("[yolo] nms_threshold is not supported")
    if float(section.options.get("thresh", SCORE_FLOOR)) != SCORE_FLOOR:
        raise ValueError(f"[yolo] thresh must be {SCORE_FLOOR}, the rows' score floor")
    mask = section.ints("mask")
    anchors = np.array(section.ints("anchors"), np.float32).reshape(-1, 2)[mask]
    classes = section.integer("classes", 80)
    per_anchor = 5 + classes
    count = grid * grid * len(mask)
    # NCHW (1, A*85, H, W) -> rows ordered (y, x, anchor) as OpenCV orders them.
    shaped = graph.op(
        "Reshape",
        [source, graph.const("shape", np.array([len(mask), per_anchor, grid * grid], np.int64))],
    )
    rows = graph.op(
        "Reshape",
        [
            graph.op("Transpose", [shaped], perm=[2, 0, 1]),
            graph.const("shape", np.array([count, per_anchor], np.int64)),
        ],
    )
    # YOLOv4's scale_x_y stretches the sigmoid about the cell's centre, so a centre can reach the
    # cell's edges: (sigmoid * scale - (scale - 1) / 2 + cell) / grid.
    scale = float(section.options.get("scale_x_y", "1"))
    ys, xs, _ = np.meshgrid(np.arange(grid), np.arange(grid), np.arange(len(mask)), indexing="ij")
    cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
    offsets = ((cells - (scale - 1) / 2) / grid).astype(np.float32)
    sizes = np.tile(anchors, (grid * grid, 1)) / np.float32(input_size)

    def columns(start: int, end: int) -> str:
        return graph.op(
            "Slice",
            [
                rows,
                graph.const("start", np.array([start], np.int64)),
                graph.const("end", np.array([end], np.int64)),
                graph.const("axis", np.array([1], np.int64)),
            ],
        )

    centres = graph.op(
        "Add",
        [
            graph.op(
                "Mul",
                [
                    graph.op("Sigmoid", [columns(0, 2)]),
                    graph.const("cell", np.array([scale / grid], np.float32)),
                ],
            ),
            graph.const("offsets", offsets),
        ],
    )
    extents = graph.op("Mul", [graph.op("Exp", [columns(2, 4)]), graph.const("anchors", sizes)])
    objectness = graph.op("Sigmoid", [columns(4, 5)])
    scores = graph.op("Mul", [graph.op("Sigmoid", [columns(5, per_anchor)]), objectness])
    floor = graph.const("floor", np.array([SCORE_FLOOR], np.float32))
    zero = graph.const("zero", np.array([0.0], np.float32))
    scores = graph.op("Where", [graph.op("Greater", [scores, floor]), scores, zero])
    return graph.op("Concat", [centres, extents, objectness, scores], axis=1)


def _square_input(net: Section) -> int:
    input_size = net.integer("width", 416)
    if net.integer("height", input_size) != input_size:
        raise ValueError("only square network inputs are supported")
    return input_size


def graph_input_size(paths: ModelPaths) -> int:
    """The side S of the graph's 1x3xSxS input: the cfg's ``[net]`` width (416 for the official
    cfg). Raises ``ValueError`` for a cfg whose input is not square."""
    return _square_input(parse_cfg(paths.cfg.read_text())[0])


def build_model(
    cfg_path: Path, weights_path: Path, input_size: int | None = None
) -> onnx.ModelProto:
    """Build the ONNX graph (input ``images`` 1x3xSxS RGB in [0,1], output ``rows`` (N, 5 + C)
    for C classes: 85 columns for COCO).

    S is ``input_size`` (a multiple of the network's stride, 32), or the cfg's when None: the
    network is convolutional, only the YOLO decode's grids and anchor scale depend on S.
    Raises ``ValueError`` for a layer, an activation or an option the graph cannot build as
    OpenCV's importer runs it, and for weights that do not match the cfg.
    """
    sections = parse_cfg(cfg_path.read_text())
    net, layers = sections[0], sections[1:]
    input_size = input_size or _square_input(net)
    weights = _WeightReader(weights_path)
    graph = _GraphBuilder()
    source = _Tensor(INPUT_NAME, net.integer("channels", 3), input_size)
    outputs: list[_Tensor] = []
    heads: list[str] = []
    for index, layer in enumerate(layers):
        if layer.kind == "convolutional":
            source = _convolution(graph, layer, source, weights)
        elif layer.kind == "maxpool":
            source = _maxpool(graph, layer, source)
        elif layer.kind == "upsample":
            source = _upsample(graph, layer, source)
        elif layer.kind == "route":
            source = _route(
                graph, layer, [outputs[i if i >= 0 else index + i] for i in layer.ints("layers")]
            )
        elif layer.kind == "yolo":
            heads.append(_yolo_decode(graph, layer, source.name, source.side, input_size))
        else:
            raise ValueError(f"unsupported darknet layer [{layer.kind}]")
        outputs.append(source)
    weights.finish()
    rows = graph.op("Concat", heads, axis=0) if len(heads) > 1 else heads[0]
    graph.nodes.append(helper.make_node("Identity", [rows], [OUTPUT_NAME]))
    classes = layers[[layer.kind for layer in layers].index("yolo")].integer("classes", 80)
    model = helper.make_model(
        helper.make_graph(
            graph.nodes,
            cfg_path.stem,
            [
                helper.make_tensor_value_info(
                    INPUT_NAME, TensorProto.FLOAT, [1, 3, input_size, input_size]
                )
            ],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["rows", 5 + classes])],
            graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="iweblens",
        producer_version=str(CONVERTER_VERSION),
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _provenance(paths: ModelPaths, input_size: int) -> dict[str, object]:
    return {
        "converter_version": CONVERTER_VERSION,
        "cfg_sha256": sha256_of(paths.cfg),
        "weights_sha256": sha256_of(paths.weights),
        "input_size": input_size,
    }


def onnx_path(paths: ModelPaths, input_size: int | None = None) -> Path:
    """Where the model converted at ``input_size`` (None: the cfg's) lives: ``<cfg stem>.onnx`` at
    the cfg's size, a file named with its size at any other."""
    if input_size is None or input_size == graph_input_size(paths):
        return paths.derived_dir / f"{paths.cfg.stem}.onnx"
    return paths.derived_dir / f"{paths.cfg.stem}-{input_size}.onnx"


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def ensure_onnx(paths: ModelPaths, input_size: int | None = None) -> Path:
    """Return the cached ONNX model at ``input_size`` (None: the cfg's), converting it first if
    it is missing or stale.

    Stale means the sidecar's source hashes, input size or converter version differ from the
    current ones. The model is written before its sidecar, so an interrupted conversion is
    redone next time.
    """
    size = input_size or graph_input_size(paths)
    target = onnx_path(paths, size)
    sidecar = target.with_name(target.name + SIDECAR_SUFFIX)
    wanted = _provenance(paths, size)
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded == wanted and target.is_file():
        return target
    model = build_model(paths.cfg, paths.weights, size)
    _write_atomically(target, model.SerializeToString())
    _write_atomically(sidecar, json.dumps(wanted, indent=2).encode() + b"\n")
    return target
