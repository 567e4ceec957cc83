"""The cut-down oracle: a darknet model reduced to some of its classes, by editing its files.

A ``[yolo]`` head's 1x1 convolution computes, per anchor of its mask, 5 box and objectness
channels then one channel per class, each from its own filter; keeping the filters of the kept
classes (and every anchor's 5) keeps their channels' values. So the cut-down model's detections
must be the full model's restricted to those classes: an oracle for a loader of user models.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from iweblens.models.darknet import (
    FLOAT32_BYTES,
    Section,
    header_size,
    layer_value_counts,
    parse_cfg,
)
from iweblens.models.store import ModelPaths


def cut_down(paths: ModelPaths, keep: Sequence[str], folder: Path) -> ModelPaths:
    """Write into ``folder`` (created) the model of ``paths`` detecting only the classes ``keep``.

    ``keep``: labels of the names file; the new names file lists them in this order, and the
    head filters follow it. The cfg and names keep their file names, the weights too; in the
    cfg only each head convolution's ``filters=`` and each ``[yolo]``'s ``classes=`` change,
    in the weights only the head convolutions' values (every other byte is the original's).
    Raises ``ValueError`` for a label the names file does not hold, and ``AssertionError`` for
    a ``[yolo]`` not right after the convolution that feeds it.
    """
    labels = paths.labels()
    missing = [name for name in keep if name not in labels]
    if missing:
        raise ValueError(f"{paths.names} has no class {missing}")
    kept = [labels.index(name) for name in keep]
    text = paths.cfg.read_text()
    sections = parse_cfg(text)
    layers = sections[1:]
    counts = layer_value_counts(sections)
    data = paths.weights.read_bytes()
    major, minor = struct.unpack("<ii", data[:8])
    starts = header_size(major, minor) + FLOAT32_BYTES * np.cumsum([0, *counts])
    pieces: list[bytes] = []
    done = 0
    edits: dict[tuple[int, str], int] = {}  # (section index, key) -> new value
    for index, layer in enumerate(layers):
        if layer.kind != "yolo":
            continue
        conv = layers[index - 1]
        assert conv.kind == "convolutional", f"layer {index - 1} feeds a [yolo] but is no conv"
        classes = layer.integer("classes", 0)
        anchors = len(layer.ints("mask"))
        rows = [
            anchor * (5 + classes) + offset
            for anchor in range(anchors)
            for offset in [*range(5), *(5 + k for k in kept)]
        ]
        start, end = int(starts[index - 1]), int(starts[index])
        values = _kept_filters(conv, np.frombuffer(data[start:end], "<f4"), rows)
        pieces += [data[done:start], values.tobytes()]
        done = end
        edits[(index, "filters")] = len(rows)  # sections[index] is layer index - 1
        edits[(index + 1, "classes")] = len(kept)
    pieces.append(data[done:])
    folder.mkdir(parents=True, exist_ok=True)
    cut = ModelPaths(
        folder / paths.cfg.name, folder / paths.weights.name, folder / paths.names.name
    )
    cut.cfg.write_text(_edited_cfg(text, edits))
    cut.weights.write_bytes(b"".join(pieces))
    cut.names.write_text("".join(f"{name}\n" for name in keep))
    return cut


def _kept_filters(conv: Section, values: np.ndarray, rows: list[int]) -> np.ndarray:
    """A convolution's values (darknet's order) with only the filters ``rows``, in that order."""
    filters = conv.integer("filters", 1)
    per_filter = 4 if conv.integer("batch_normalize", 0) else 1  # bias (scale, mean, variance)
    head = values[: per_filter * filters].reshape(per_filter, filters)[:, rows]
    kernel = values[per_filter * filters :].reshape(filters, -1)[rows]
    return np.concatenate([head.ravel(), kernel.ravel()]).astype("<f4")


def _edited_cfg(text: str, edits: dict[tuple[int, str], int]) -> str:
    """``text`` with the value of each ``(section index, key)`` of ``edits`` replaced (with any
    comment after it), every other character kept; sections counted as ``parse_cfg`` counts."""
    lines = []
    section = -1
    for raw in text.splitlines(keepends=True):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("["):
            section += 1
        elif line and not line.startswith(";"):
            key, _, _ = line.partition("=")
            if (section, key.strip()) in edits:
                name, _, value = raw.partition("=")
                ending = value[len(value.rstrip("\r\n")) :]
                raw = f"{name}={edits[(section, key.strip())]}{ending}"
        lines.append(raw)
    return "".join(lines)
