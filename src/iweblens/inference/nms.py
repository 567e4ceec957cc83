"""Non-maximum suppression per class: OpenCV's IoU rule, or darknet's greedy DIoU rule.

``iou`` is what the YOLOv3-tiny detector has always used (``cv2.dnn.NMSBoxesBatched``).
``diou`` is AlexeyAB darknet's ``nms_kind=greedynms`` (``diounms_sort`` in ``src/box.c``, which
``detector test`` runs when a cfg's [yolo] layers ask it, as YOLOv4-tiny's do): boxes are visited
by falling score, and a box of the same class is suppressed when its DIoU with a kept box exceeds
the threshold. darknet's ``box_diou`` is ``IoU - (d2 / c2) ** 0.6``, d2 the squared distance
between the centres and c2 the squared diagonal of the smallest box enclosing both; the exponent
is fixed in its source (the cfg's ``beta_nms`` only feeds ``nms_kind=diounms``).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

NmsKind = Literal["iou", "diou"]

# Hard-coded in darknet's box_diou, whatever the cfg says.
DIOU_EXPONENT = 0.6


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    score_threshold: float,
    nms_threshold: float,
    kind: NmsKind = "iou",
    *,
    image_size: tuple[int, int] | None = None,
) -> np.ndarray:
    """The indices of the boxes kept, highest score first (ties: lower index first).

    ``boxes``: (N, 4) float, left, top, width, height in pixels; ``scores``: (N,) float;
    ``class_ids``: (N,) int. Only boxes scoring above ``score_threshold`` (strictly) are kept,
    and boxes of different classes never suppress each other. A box is suppressed when its
    overlap with a kept, higher-scored box of its class exceeds ``nms_threshold``: the IoU for
    ``"iou"`` (exactly ``cv2.dnn.NMSBoxesBatched``), darknet's DIoU for ``"diou"``.

    ``image_size``: (width, height) in pixels, for ``"diou"`` only: darknet measures the centre
    distance and the diagonal in fractions of the image's width and height, which is not the
    same ratio as in pixels when the image is not square. None: measured in pixels.

    Returns a (K,) int64 array. Raises ValueError for another ``kind``.
    """
    if kind == "iou":
        keep = cv2.dnn.NMSBoxesBatched(
            np.asarray(boxes, dtype=np.float64).tolist(),
            np.asarray(scores, dtype=np.float64).tolist(),
            np.asarray(class_ids, dtype=np.int64).tolist(),
            score_threshold,
            nms_threshold,
        )
        return np.asarray(keep, dtype=np.int64).reshape(-1)
    if kind == "diou":
        return _greedy_diou(boxes, scores, class_ids, score_threshold, nms_threshold, image_size)
    raise ValueError(f"unknown NMS kind {kind!r} (expected 'iou' or 'diou')")


def diou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """darknet's ``box_diou`` of (N, 4) boxes against (M, 4) boxes, all left, top, width, height:
    an (N, M) array.

    Boxes that do not overlap, or have no area, have IoU 0 (as in darknet's ``box_iou``); two
    points at the same place have no penalty.
    """
    left, top, width, height = a.T[:, :, None]
    other_left, other_top, other_width, other_height = b.T[:, None, :]
    right, bottom = left + width, top + height
    other_right, other_bottom = other_left + other_width, other_top + other_height
    inter_w = np.minimum(right, other_right) - np.maximum(left, other_left)
    inter_h = np.minimum(bottom, other_bottom) - np.maximum(top, other_top)
    inter = np.clip(inter_w, 0, None) * np.clip(inter_h, 0, None)
    union = width * height + other_width * other_height - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=(inter > 0) & (union > 0))
    hull_w = np.maximum(right, other_right) - np.minimum(left, other_left)
    hull_h = np.maximum(bottom, other_bottom) - np.minimum(top, other_top)
    diagonal = hull_w**2 + hull_h**2
    dx = (left + right - other_left - other_right) / 2
    dy = (top + bottom - other_top - other_bottom) / 2
    ratio = np.divide(dx**2 + dy**2, diagonal, out=np.zeros_like(inter), where=diagonal > 0)
    result: np.ndarray = iou - ratio**DIOU_EXPONENT
    return result


def _greedy_diou(
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    score_threshold: float,
    nms_threshold: float,
    image_size: tuple[int, int] | None,
) -> np.ndarray:
    # Scores and thresholds are float32 in darknet (and in OpenCV), so a score equal to the
    # threshold's float32 is not above it.
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    candidates = np.flatnonzero(scores > np.float32(score_threshold))
    # Stable, so equal scores go by index as in OpenCV (darknet's qsort leaves their order open).
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    sorted_boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[order]
    if image_size is not None:
        width, height = image_size
        sorted_boxes = sorted_boxes / np.array([width, height, width, height], dtype=np.float64)
    sorted_classes = np.asarray(class_ids, dtype=np.int64).reshape(-1)[order]
    kept = np.zeros(order.size, dtype=bool)
    for class_id in np.unique(sorted_classes):
        members = np.flatnonzero(sorted_classes == class_id)
        overlaps = diou(sorted_boxes[members], sorted_boxes[members]) > np.float32(nms_threshold)
        alive = np.ones(members.size, dtype=bool)
        for i in range(members.size):
            if alive[i]:
                alive[i + 1 :] &= ~overlaps[i, i + 1 :]
        kept[members[alive]] = True
    return order[kept].astype(np.int64)
