"""NMS per class: OpenCV's IoU rule unchanged, darknet's greedy DIoU rule as darknet computes it."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from iweblens.inference.nms import NmsKind, diou, nms

THRESHOLD = 0.45


def boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(rows, dtype=np.float64)


def darknet_box_diou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """``box_diou`` of darknet's src/box.c, line for line, on (centre x, centre y, w, h) boxes."""

    def overlap(x1: float, w1: float, x2: float, w2: float) -> float:
        return min(x1 + w1 / 2, x2 + w2 / 2) - max(x1 - w1 / 2, x2 - w2 / 2)

    w, h = overlap(a[0], a[2], b[0], b[2]), overlap(a[1], a[3], b[1], b[3])
    inter = 0.0 if w < 0 or h < 0 else w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    iou = 0.0 if inter == 0 or union == 0 else inter / union
    top, bot = min(a[1] - a[3] / 2, b[1] - b[3] / 2), max(a[1] + a[3] / 2, b[1] + b[3] / 2)
    left, right = min(a[0] - a[2] / 2, b[0] - b[2] / 2), max(a[0] + a[2] / 2, b[0] + b[2] / 2)
    c = (right - left) ** 2 + (bot - top) ** 2
    if c == 0:
        return iou
    d = (a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2
    return iou - math.pow(d / c, 0.6)


def darknet_diounms_sort(
    ltwh: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, score_threshold: float
) -> list[int]:
    """``diounms_sort`` with ``GREEDY_NMS``: per class, every box against every lower one.

    Returns the kept indices sorted by (score falling, index), as ``nms`` orders them.
    """
    centre = [(x + w / 2, y + h / 2, w, h) for x, y, w, h in ltwh.tolist()]
    prob = [s if s > score_threshold else 0.0 for s in scores.tolist()]
    kept = []
    for k in set(class_ids.tolist()):
        members = sorted((i for i in range(len(prob)) if class_ids[i] == k), key=lambda i: -prob[i])
        for n, i in enumerate(members):
            if prob[i] == 0:
                continue
            kept.append(i)
            for j in members[n + 1 :]:
                if darknet_box_diou(centre[i], centre[j]) > THRESHOLD:
                    prob[j] = 0.0
    return sorted(kept, key=lambda i: (-scores[i], i))


def random_boxes(seed: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crowded boxes (many overlaps near the threshold), scores, and three classes."""
    rng = np.random.default_rng(seed)
    left_top = rng.uniform(0, 200, (count, 2))
    size = rng.uniform(20, 120, (count, 2))
    ltwh = np.hstack([left_top, size]).astype(np.float32).astype(np.float64)
    scores = rng.uniform(0.3, 1.0, count).astype(np.float32).astype(np.float64)
    return ltwh, scores, rng.integers(0, 3, count)


def test_offset_centres_suppress_under_iou_but_not_under_diou() -> None:
    # IoU 0.48 > 0.45; DIoU 0.48 - (35^2 / (135^2 + 100^2))^0.6 = 0.33.
    pair = boxes((0, 0, 100, 100), (35, 0, 100, 100))
    scores, classes = np.array([0.9, 0.8]), np.array([0, 0])
    assert nms(pair, scores, classes, 0.5, THRESHOLD, "iou").tolist() == [0]
    assert nms(pair, scores, classes, 0.5, THRESHOLD, "diou").tolist() == [0, 1]


@pytest.mark.parametrize("kind", ["iou", "diou"])
def test_concentric_boxes_suppress_alike(kind: NmsKind) -> None:
    # Same centre: no penalty, DIoU is the IoU (0.64).
    pair = boxes((0, 0, 100, 100), (10, 10, 80, 80))
    scores, classes = np.array([0.8, 0.9]), np.array([0, 0])
    assert nms(pair, scores, classes, 0.5, THRESHOLD, kind).tolist() == [1]


def test_diou_by_hand_uses_darknets_exponent() -> None:
    a, b = boxes((0, 0, 100, 100)), boxes((30, 0, 100, 100))
    iou = 70 * 100 / (2 * 100 * 100 - 70 * 100)
    centre_distance2 = 30**2
    diagonal2 = 130**2 + 100**2
    expected = iou - (centre_distance2 / diagonal2) ** 0.6
    assert diou(a, b) == pytest.approx(np.array([[expected]]), abs=1e-12)
    # The penalty without darknet's exponent would leave this pair above the threshold.
    assert iou - centre_distance2 / diagonal2 > THRESHOLD > expected
    pair, scores, classes = np.vstack([a, b]), np.array([0.9, 0.8]), np.array([0, 0])
    assert nms(pair, scores, classes, 0.5, THRESHOLD, "diou").tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(5))
def test_diou_is_darknets_formula(seed: int) -> None:
    ltwh, _, _ = random_boxes(seed, 40)
    centre = [(x + w / 2, y + h / 2, w, h) for x, y, w, h in ltwh.tolist()]
    expected = [[darknet_box_diou(one, other) for other in centre] for one in centre]
    assert diou(ltwh, ltwh) == pytest.approx(np.array(expected), abs=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_greedy_diou_is_darknets_diounms_sort(seed: int) -> None:
    ltwh, scores, classes = random_boxes(seed, 60)
    kept = nms(ltwh, scores, classes, 0.5, THRESHOLD, "diou")
    assert kept.tolist() == darknet_diounms_sort(ltwh, scores, classes, 0.5)


@pytest.mark.parametrize("seed", range(10))
def test_iou_is_opencvs_nms_boxes_batched(seed: int) -> None:
    ltwh, scores, classes = random_boxes(seed, 200)
    expected = cv2.dnn.NMSBoxesBatched(
        ltwh.tolist(), scores.tolist(), classes.tolist(), 0.5, THRESHOLD
    )
    kept = nms(ltwh, scores, classes, 0.5, THRESHOLD, "iou")
    assert kept.dtype == np.int64
    assert kept.tolist() == np.asarray(expected).reshape(-1).tolist()


@pytest.mark.parametrize("kind", ["iou", "diou"])
def test_classes_do_not_suppress_each_other(kind: NmsKind) -> None:
    # Two classes on the same two boxes: each class keeps its own best, the box it covers.
    same = boxes((0, 0, 100, 100), (0, 0, 100, 100), (0, 0, 100, 100), (0, 0, 100, 100))
    scores, classes = np.array([0.9, 0.7, 0.6, 0.8]), np.array([0, 0, 1, 1])
    assert nms(same, scores, classes, 0.5, THRESHOLD, kind).tolist() == [0, 3]


@pytest.mark.parametrize("kind", ["iou", "diou"])
def test_score_threshold_is_strict_and_ties_go_by_index(kind: NmsKind) -> None:
    apart = boxes((0, 0, 10, 10), (50, 0, 10, 10), (100, 0, 10, 10), (150, 0, 10, 10))
    scores, classes = np.array([0.5, 0.7, 0.9, 0.7]), np.array([0, 1, 0, 2])
    kept = nms(apart, scores, classes, 0.5, THRESHOLD, kind)
    assert kept.tolist() == [2, 1, 3]


@pytest.mark.parametrize("kind", ["iou", "diou"])
def test_a_score_at_the_threshold_in_float32_is_not_above_it(kind: NmsKind) -> None:
    apart = boxes((0, 0, 10, 10), (50, 0, 10, 10))
    scores = np.array([0.3, 0.31], dtype=np.float32)
    kept = nms(apart, scores, np.array([0, 0]), 0.3, THRESHOLD, kind)
    assert kept.tolist() == [1]


def test_a_suppressed_box_suppresses_nothing() -> None:
    # B overlaps A and C; A removes B, so C, which only B covered, stays.
    chain = boxes((0, 0, 100, 100), (20, 0, 100, 100), (40, 0, 100, 100))
    scores, classes = np.array([0.9, 0.8, 0.7]), np.array([0, 0, 0])
    assert nms(chain, scores, classes, 0.5, THRESHOLD, "iou").tolist() == [0, 2]
    assert nms(chain, scores, classes, 0.5, 0.55, "diou").tolist() == [0, 2]


def test_identical_empty_boxes_do_not_overlap_in_darknet() -> None:
    points = boxes((5, 5, 0, 0), (5, 5, 0, 0))
    kept = nms(points, np.array([0.9, 0.8]), np.array([0, 0]), 0.5, THRESHOLD, "diou")
    assert kept.tolist() == [0, 1]


def test_image_size_measures_the_penalty_in_fractions_of_the_image() -> None:
    # A horizontal offset on a wide image is a small fraction of its width.
    pair = boxes((0, 0, 100, 100), (30, 0, 100, 100))
    scores, classes = np.array([0.9, 0.8]), np.array([0, 0])
    assert nms(pair, scores, classes, 0.5, THRESHOLD, "diou").tolist() == [0, 1]
    wide = nms(pair, scores, classes, 0.5, THRESHOLD, "diou", image_size=(400, 100))
    assert wide.tolist() == [0]
    relative = pair / np.array([400, 100, 400, 100])
    assert nms(relative, scores, classes, 0.5, THRESHOLD, "diou").tolist() == [0]


@pytest.mark.parametrize("kind", ["iou", "diou"])
def test_no_boxes(kind: NmsKind) -> None:
    empty = np.zeros((0, 4))
    kept = nms(empty, np.zeros(0), np.zeros(0, dtype=np.int64), 0.5, THRESHOLD, kind)
    assert kept.dtype == np.int64
    assert kept.shape == (0,)


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown NMS kind"):
        nms(boxes((0, 0, 1, 1)), np.array([0.9]), np.array([0]), 0.5, THRESHOLD, "giou")  # type: ignore[arg-type]
