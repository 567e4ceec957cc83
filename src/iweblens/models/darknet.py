"""darknet's model files: the cfg parser and a model folder's check, in pure Python.

The ONNX converter builds its graph from these sections; the model repository checks a user's
model folder (``check_model``) before anything loads it. No ONNX, no OpenCV.

Layers are numbered as darknet numbers them (and a ``[route]``'s ``layers=`` refers to them):
from 0, after ``[net]``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

SUPPORTED_LAYERS = ("convolutional", "maxpool", "upsample", "route", "yolo")
# darknet's network stride: every input side must be a multiple of it.
STRIDE = 32
FLOAT32_BYTES = 4
# major, minor and revision, int32 each; the "images seen" counter follows.
_VERSION_BYTES = 12


class DarknetModelError(ValueError):
    """A model's files are broken or disagree; the message names the file and the fault."""


@dataclass(frozen=True)
class CheckedModel:
    """What a checked model's files hold.

    ``classes``: the ``[yolo]`` layers' ``classes=``; ``input_size``: the network input's side
    in pixels (square, a multiple of 32); ``labels``: the class names in class-index order,
    ``classes`` of them.
    """

    classes: int
    input_size: int
    labels: tuple[str, ...]


@dataclass
class Section:
    """One ``[kind]`` block of a darknet cfg file."""

    kind: str
    options: dict[str, str] = field(default_factory=dict)

    def integer(self, key: str, default: int) -> int:
        """The option as an int (``default`` when absent)."""
        return int(self.options.get(key, default))

    def ints(self, key: str) -> list[int]:
        """A comma-separated option as ints."""
        return [int(part) for part in self.options[key].split(",") if part.strip()]


def parse_cfg(text: str) -> list[Section]:
    """Parse darknet's ini-like cfg into sections, in file order.

    ``#`` starts a comment anywhere, ``;`` at the start of a line (as in darknet); a repeated key
    keeps its last value (as OpenCV's importer does). Raises ``ValueError`` naming the line for
    an option outside any section or a line that is not ``key=value``, which OpenCV's importer
    refuses too: read as an empty option, it would build a network nobody described.
    """
    sections: list[Section] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith("["):
            sections.append(Section(line.strip("[]").strip()))
            continue
        key, equals, value = line.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"cfg line {number}: {raw.strip()!r} is not key=value")
        if not sections:
            raise ValueError(f"cfg line {number}: {raw.strip()!r} comes before any [section]")
        sections[-1].options[key.strip()] = value.strip()
    return sections


def header_size(major: int, minor: int) -> int:
    """The bytes of a weights file's header in format ``major.minor``: three int32 (major, minor,
    revision), then the "images seen" counter, int64 from format 0.2 on, int32 before."""
    return _VERSION_BYTES + (8 if major * 10 + minor >= 2 else 4)


def layer_value_counts(sections: Sequence[Section]) -> list[int]:
    """How many float32 values each layer after ``[net]`` reads from the weights file, in order.

    A ``[convolutional]`` reads ``filters`` biases, then ``filters`` batch-norm scales, means and
    variances when ``batch_normalize=1``, then ``filters x channels/groups x size x size`` kernel
    values; the other layers read none, and pass channels on (a ``[route]`` concatenates its
    layers', or takes the ``group_id``-th of ``groups`` slices of each). Raises
    ``DarknetModelError`` for a cfg that does not start with ``[net]``, a layer kind outside
    ``SUPPORTED_LAYERS``, an option that is not a positive integer, a route to a layer not
    before it, or a ``[yolo]`` whose input channels are not ``len(mask) x (5 + classes)``.
    """
    return _walk(sections)[0]


def weights_file_size(sections: Sequence[Section], major: int, minor: int) -> int:
    """The exact size in bytes of a weights file of format ``major.minor`` for these sections.

    Raises ``DarknetModelError`` as ``layer_value_counts`` does.
    """
    return header_size(major, minor) + FLOAT32_BYTES * sum(layer_value_counts(sections))


def check_model(cfg: Path, weights: Path, names: Path) -> CheckedModel:
    """Check that one model's cfg, weights and names files make a detector, without loading it.

    The cfg must parse, start with ``[net]`` (a square input whose side is a multiple of 32),
    hold only ``SUPPORTED_LAYERS`` and at least one ``[yolo]``, all with the same ``classes=``,
    each fed ``len(mask) x (5 + classes)`` channels; the weights file must have exactly the size
    the cfg needs (its header's format read from the file); the names file must hold ``classes``
    non-empty lines. Reads the weights file's first 8 bytes only. Raises ``DarknetModelError``,
    naming the file and the fault, for the first fault found (a file unreadable included).
    """
    sections = _sections(cfg)
    try:
        _, heads = _walk(sections)
        input_size = _input_size(sections[0])
    except DarknetModelError as error:
        raise DarknetModelError(f"{cfg}: {error}") from None
    if not heads:
        raise DarknetModelError(f"{cfg}: no [yolo] layer; a detector needs at least one")
    classes = heads[0][1]
    if any(count != classes for _, count in heads):
        listed = ", ".join(f"classes={count} in layer {index}" for index, count in heads)
        raise DarknetModelError(f"{cfg}: the [yolo] layers disagree: {listed}")
    cfg_nms_kind(cfg)
    _check_weights(weights, sections, cfg.name)
    labels = tuple(line.strip() for line in _text(names).splitlines() if line.strip())
    if len(labels) != classes:
        raise DarknetModelError(
            f"{names}: has {len(labels)} names; {cfg.name} has classes={classes}"
        )
    return CheckedModel(classes, input_size, labels)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise DarknetModelError(f"{path}: cannot be read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise DarknetModelError(
            f"{path}: is not UTF-8 text (byte {error.start} is 0x{error.object[error.start]:02x})"
        ) from None


def _sections(cfg: Path) -> list[Section]:
    text = _text(cfg)
    try:
        sections = parse_cfg(text)
    except ValueError as error:
        raise DarknetModelError(f"{cfg}: {error}") from None
    if not sections:
        raise DarknetModelError(f"{cfg}: has no [section]; a cfg starts with [net]")
    return sections


def _check_weights(weights: Path, sections: Sequence[Section], cfg_name: str) -> None:
    """Raise ``DarknetModelError`` unless ``weights`` has the size the sections need."""
    try:
        with weights.open("rb") as handle:
            size = weights.stat().st_size
            start = handle.read(8)
    except OSError as error:
        raise DarknetModelError(f"{weights}: cannot be read ({error.strerror})") from None
    if size < _VERSION_BYTES:
        raise DarknetModelError(
            f"{weights}: has {size} bytes, fewer than darknet's header (major, minor, revision)"
        )
    major, minor = struct.unpack("<ii", start)
    needed = weights_file_size(sections, major, minor)
    if size != needed:
        header = header_size(major, minor)
        raise DarknetModelError(
            f"{weights}: has {size} bytes; {cfg_name} needs {needed} (a {header}-byte header of "
            f"format {major}.{minor}, then {(needed - header) // FLOAT32_BYTES} float32 values)"
        )


def _input_size(net: Section) -> int:
    width, height = _integer(net, "[net]", "width"), _integer(net, "[net]", "height")
    if width != height:
        raise DarknetModelError(f"the [net] input is {width}x{height}; it must be square")
    if width % STRIDE:
        raise DarknetModelError(
            f"the [net] width={width} is not a multiple of {STRIDE}, the network's stride"
        )
    return width


def _integer(
    section: Section, where: str, key: str, default: int | None = None, minimum: int = 1
) -> int:
    """The option as an int of at least ``minimum`` (``default`` when absent; None: required)."""
    raw = section.options.get(key)
    if raw is None:
        if default is None:
            raise DarknetModelError(f"{where} has no {key}=")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DarknetModelError(f"{where}: {key}={raw} is not an integer") from None
    if value < minimum:
        raise DarknetModelError(f"{where}: {key}={value} must be at least {minimum}")
    return value


def _integers(section: Section, where: str, key: str) -> list[int]:
    try:
        return section.ints(key)
    except KeyError:
        raise DarknetModelError(f"{where} has no {key}=") from None
    except ValueError:
        raise DarknetModelError(
            f"{where}: {key}={section.options[key]} is not a list of integers"
        ) from None


def _walk(sections: Sequence[Section]) -> tuple[list[int], list[tuple[int, int]]]:
    """The values each layer reads, and each ``[yolo]``'s (layer index, classes)."""
    if not sections or sections[0].kind != "net":
        first = f"[{sections[0].kind}]" if sections else "nothing"
        raise DarknetModelError(f"the first section is {first}, not [net]")
    channels = _integer(sections[0], "[net]", "channels", 3)
    outputs: list[int] = []  # each layer's output channels
    counts: list[int] = []
    heads: list[tuple[int, int]] = []
    for index, layer in enumerate(sections[1:]):
        where = f"layer {index} [{layer.kind}]"
        values = 0
        if layer.kind == "convolutional":
            filters = _integer(layer, where, "filters", 1)
            size = _integer(layer, where, "size", 1)
            groups = _integer(layer, where, "groups", 1)
            if channels % groups:
                raise DarknetModelError(
                    f"{where}: groups={groups} does not divide its {channels} input channels"
                )
            batch_norm = _integer(layer, where, "batch_normalize", 0, minimum=0) != 0
            values = filters * (4 if batch_norm else 1) + filters * (channels // groups) * size**2
            channels = filters
        elif layer.kind == "route":
            channels = _route_channels(layer, where, index, outputs)
        elif layer.kind == "yolo":
            heads.append((index, _check_head(sections, index, where, channels)))
        elif layer.kind not in SUPPORTED_LAYERS:
            raise DarknetModelError(
                f"{where} is not supported (only [{'], ['.join(SUPPORTED_LAYERS)}])"
            )
        outputs.append(channels)
        counts.append(values)
    return counts, heads


def _route_channels(layer: Section, where: str, index: int, outputs: list[int]) -> int:
    groups = _integer(layer, where, "groups", 1)
    group_id = _integer(layer, where, "group_id", 0, minimum=0)
    if group_id >= groups:
        raise DarknetModelError(f"{where}: group_id={group_id} is not below groups={groups}")
    total = 0
    for target in _integers(layer, where, "layers"):
        source = target if target >= 0 else index + target
        if not 0 <= source < index:
            raise DarknetModelError(f"{where}: layers= names {target}, not a layer before it")
        if outputs[source] % groups:
            raise DarknetModelError(
                f"{where}: groups={groups} does not divide layer {source}'s "
                f"{outputs[source]} channels"
            )
        total += outputs[source] // groups
    return total


def _check_head(sections: Sequence[Section], index: int, where: str, channels: int) -> int:
    """The ``[yolo]``'s classes, once its input channels are checked against mask and classes."""
    layer = sections[index + 1]
    classes = _integer(layer, where, "classes")
    # Without a mask, darknet's head uses all of its num anchors.
    if "mask" in layer.options:
        anchors = len(_integers(layer, where, "mask"))
    else:
        anchors = _integer(layer, where, "num", 1)
    needed = anchors * (5 + classes)
    if channels != needed:
        need = f"{anchors} x (5 + {classes}) = {needed} ({anchors} anchors, classes={classes})"
        before = sections[index] if index > 0 else None
        if before is not None and before.kind == "convolutional":
            raise DarknetModelError(
                f"layer {index - 1} [convolutional] has filters={channels}; the {where} after "
                f"it needs {need}"
            )
        raise DarknetModelError(f"{where} receives {channels} channels; it needs {need}")
    return classes


# darknet's [yolo] nms_kind -> the rule ``inference.nms`` applies; absent is darknet's default.
NMS_KINDS = {"default": "iou", "greedynms": "diou"}


def cfg_nms_kind(cfg: Path) -> Literal["iou", "diou"]:
    """The suppression rule a cfg's ``[yolo]`` layers ask for (``iou`` unless ``greedynms``).

    Raises ``DarknetModelError`` for another ``nms_kind`` (``diounms``, ``cornersnms``), which
    iWebLens does not reproduce, or for layers that disagree.
    """
    asked = {
        section.options.get("nms_kind", "default")
        for section in _sections(cfg)
        if section.kind == "yolo"
    }
    unknown = sorted(asked - set(NMS_KINDS))
    if unknown or len(asked) > 1:
        raise DarknetModelError(
            f"{cfg}: nms_kind {', '.join(sorted(asked))}; supported: one of "
            f"{', '.join(NMS_KINDS)} for every [yolo] layer"
        )
    return "diou" if NMS_KINDS[asked.pop()] == "diou" else "iou"
