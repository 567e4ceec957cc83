"""How closely two engines' detections agree: the yardsticks of the equivalence test and the bench.

Two standards are used. *Identical* (a faster float engine replacing OpenCV): the same number of
detections, each paired with one of the same label, box IoU >= 0.99 and confidence within 0.001.
*F1* (a quantized engine, which is allowed to drift): greedy matching by IoU >= 0.5 within a label,
precision and recall taken against the reference engine's detections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from iweblens.detection import Detection

IDENTICAL_IOU = 0.99
IDENTICAL_CONFIDENCE = 0.001
F1_IOU = 0.5


def iou(a: Detection, b: Detection) -> float:
    """Intersection over union of two boxes in pixels (zero-area boxes overlap nothing)."""
    width = min(a.left + a.width, b.left + b.width) - max(a.left, b.left)
    height = min(a.top + a.height, b.top + b.height) - max(a.top, b.top)
    inter = max(width, 0) * max(height, 0)
    union = a.width * a.height + b.width * b.height - inter
    return inter / union if union > 0 else 0.0


def _pairs(
    reference: list[Detection], candidate: list[Detection], min_iou: float
) -> list[tuple[Detection, Detection]]:
    """Greedy one-to-one pairing of same-label boxes, best IoU first."""
    scored = sorted(
        (
            (iou(ref, cand), i, j)
            for i, ref in enumerate(reference)
            for j, cand in enumerate(candidate)
            if ref.label == cand.label
        ),
        reverse=True,
    )
    used_ref: set[int] = set()
    used_cand: set[int] = set()
    pairs = []
    for overlap, i, j in scored:
        if overlap < min_iou or i in used_ref or j in used_cand:
            continue
        used_ref.add(i)
        used_cand.add(j)
        pairs.append((reference[i], candidate[j]))
    return pairs


def differences(reference: list[Detection], candidate: list[Detection]) -> list[str]:
    """Why two detection lists are not identical; empty when they are."""
    pairs = _pairs(reference, candidate, IDENTICAL_IOU)
    problems = [
        f"{ref.label}: confidence {ref.confidence:.4f} vs {cand.confidence:.4f}"
        for ref, cand in pairs
        if abs(ref.confidence - cand.confidence) > IDENTICAL_CONFIDENCE
    ]
    matched_ref = {id(ref) for ref, _ in pairs}
    matched_cand = {id(cand) for _, cand in pairs}
    problems += [f"only in reference: {d}" for d in reference if id(d) not in matched_ref]
    problems += [f"only in candidate: {d}" for d in candidate if id(d) not in matched_cand]
    return problems


@dataclass
class F1Tally:
    """True positives, false positives and false negatives accumulated over images."""

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    def add(self, reference: list[Detection], candidate: list[Detection]) -> None:
        matched = len(_pairs(reference, candidate, F1_IOU))
        self.true_positives += matched
        self.false_positives += len(candidate) - matched
        self.false_negatives += len(reference) - matched

    @property
    def f1(self) -> float:
        denominator = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / denominator if denominator else 1.0


def f1_noise(tallies: Sequence[F1Tally], resamples: int = 2000, seed: int = 0) -> float:
    """How much an F1 over these images moves by chance: its bootstrap standard deviation.

    ``tallies`` holds one tally per image; the images are drawn with replacement ``resamples``
    times (fixed seed, so a report is reproducible) and F1 is recomputed on each draw.
    """
    counts = np.array(
        [(t.true_positives, t.false_positives, t.false_negatives) for t in tallies], dtype=float
    )
    draws = np.random.default_rng(seed).integers(0, len(counts), (resamples, len(counts)))
    tp, fp, fn = counts[draws].sum(axis=1).T
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.ones_like(tp), where=denominator > 0)
    return float(f1.std())
