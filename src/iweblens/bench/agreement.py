"""How closely two engines' detections agree: the yardsticks of the equivalence test and the bench.

Two standards are used. *Identical* (a faster float engine replacing OpenCV): the same number of
detections, each paired with one of the same label, box IoU >= 0.99 and confidence within 0.001.
*F1* (a quantized engine, which is allowed to drift): greedy matching by IoU >= 0.5 within a label,
precision and recall taken against the reference engine's detections.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iweblens.config import Settings
from iweblens.detection import Detection
from iweblens.models.store import ModelStore

REFERENCE_ENGINE = "opencv"
INT8_ENGINE = "openvino-int8"

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


DarknetRecord = dict[str, list[dict[str, Any]]]


def read_darknet_record(path: Path) -> DarknetRecord:
    """darknet's own detections as recorded (``tests/reference/darknet/``): per file name, each
    detection's label, confidence and box (centre and size relative to the image)."""
    record: DarknetRecord = json.loads(path.read_text())
    return record


def darknet_in_pixels(found: list[dict[str, Any]], width: int, height: int) -> list[Detection]:
    """Recorded darknet detections in a ``width`` x ``height`` image's pixels, as iWebLens's
    detector computes its boxes: truncated to whole pixels, then clipped to the image."""
    detections = []
    for d in found:
        cx, cy, bw, bh = d["center_x"], d["center_y"], d["width"], d["height"]
        x0, x1 = max(int((cx - bw / 2) * width), 0), min(int((cx + bw / 2) * width), width - 1)
        y0, y1 = max(int((cy - bh / 2) * height), 0), min(int((cy + bh / 2) * height), height - 1)
        detections.append(
            Detection(d["label"], d["confidence"], x0, y0, max(x1 - x0, 0), max(y1 - y0, 0))
        )
    return detections


def engine_detections(
    engine: str, images: Sequence[Path], settings: Settings
) -> list[list[Detection]]:
    """Every image's detections by ``engine`` (correctness only, so no quota)."""
    from iweblens.inference.detector import Detector

    paths = ModelStore.in_cache(settings.model_dir, progress=False).verified_paths()
    detector = Detector.from_settings(settings, paths, engine)
    return [detector.detect_bytes(image.read_bytes()) for image in images]


def _quantize(images: Sequence[Path], settings: Settings) -> None:
    from iweblens.inference.quantize import quantize

    paths = ModelStore.in_cache(settings.model_dir, progress=False).verified_paths()
    quantize(paths, calibration_half(images), settings.input_size)


def prepare_int8(images: Sequence[Path], settings: Settings) -> None:
    """Quantize with the first half of the images (by file name) as the calibration set.

    In a child process: NNCF and OpenVINO leave worker threads behind that keep spinning on the
    host's cores, and would slow the client side of the measurements that follow.
    """
    child = multiprocessing.get_context("spawn").Process(
        target=_quantize, args=(list(images), settings)
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"quantization failed (exit code {child.exitcode})")


def calibration_half(images: Sequence[Path]) -> list[Path]:
    ordered = sorted(images, key=lambda image: image.name)
    return ordered[: max(1, len(ordered) // 2)]


def engine_agreement(
    engines: Sequence[str], images: Sequence[Path], settings: Settings
) -> tuple[list[str], F1Tally | None]:
    """Report lines on every engine's detections against opencv's, and INT8's F1 tally."""
    from iweblens.inference.engines import set_compute_threads

    set_compute_threads(1)
    reference = engine_detections(REFERENCE_ENGINE, images, settings)
    judged = set(images) - set(calibration_half(images))
    lines, int8 = [], None
    for engine in engines:
        if engine == REFERENCE_ENGINE:
            continue
        found = engine_detections(engine, images, settings)
        if engine == INT8_ENGINE:
            tallies = []
            for image, expected, actual in zip(images, reference, found, strict=True):
                if image in judged:
                    tallies.append(F1Tally())
                    tallies[-1].add(expected, actual)
            int8 = F1Tally(
                sum(t.true_positives for t in tallies),
                sum(t.false_positives for t in tallies),
                sum(t.false_negatives for t in tallies),
            )
            lines.append(
                f"- {engine}: F1 {int8.f1:.3f} (bootstrap s.d. {f1_noise(tallies):.3f}) on the "
                f"{len(judged)} judged images: {int8.true_positives} matched, "
                f"{int8.false_negatives} missed, {int8.false_positives} extra"
            )
            continue
        differing = [
            image.name
            for image, expected, actual in zip(images, reference, found, strict=True)
            if differences(expected, actual)
        ]
        verdict = "identical" if not differing else f"DIFFERENT on {', '.join(differing)}"
        lines.append(
            f"- {engine}: {verdict} on {len(images) - len(differing)}/{len(images)} images "
            "(same labels, IoU >= 0.99, confidence within 0.001)"
        )
    return lines, int8
