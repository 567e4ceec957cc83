"""The Frigate replay: its crops, its arrivals, its accounting, and a short run on one pod."""

from __future__ import annotations

import io
import statistics
from pathlib import Path

from PIL import Image

from iweblens.bench.frigate import (
    CROP_SIDE,
    FAILED,
    FATES,
    FrigateRun,
    camera_crop,
    frigate,
    poisson_arrivals,
    report,
)
from iweblens.bench.http_client import GAVE_UP
from iweblens.bench.soak import Outcome
from iweblens.harness.manifest import PodSpec


def test_a_crop_is_the_centre_square_at_the_model_input_size(photos: list[Path]) -> None:
    crop = Image.open(io.BytesIO(camera_crop(photos[0])))
    assert crop.format == "JPEG"
    assert crop.size == (CROP_SIDE, CROP_SIDE)


def test_poisson_arrivals_are_seeded_and_average_the_rate() -> None:
    arrivals = poisson_arrivals(5.0, 2000, seed=3)
    assert arrivals == poisson_arrivals(5.0, 2000, seed=3)
    gaps = [b - a for a, b in zip([0.0, *arrivals], arrivals, strict=False)]
    assert 0.18 < statistics.mean(gaps) < 0.22
    # Exponential gaps: as many shorter than the mean's ln 2 as longer (a periodic replay has none).
    assert 0.45 < sum(gap < 0.2 * 0.6931 for gap in gaps) / len(gaps) < 0.55


def test_each_request_is_counted_once() -> None:
    outcomes = (
        Outcome(0.0, 0.05, 200, "pod", None),  # in time
        Outcome(1.0, 1.09, 200, "pod", None),  # in time
        Outcome(2.0, 2.02, 503, "pod", None),  # refused
        Outcome(3.0, 3.1, None, None, GAVE_UP),  # not in time
        Outcome(4.0, 4.0, None, None, "refused"),  # no connection
    )
    run = FrigateRun("defaults", 5.0, outcomes)
    assert [run.count(fate) for fate in FATES] == [2, 1, 1, 1]
    assert run.share_in_time == 0.4
    assert run.latency_ms(0.5) is not None and 50 <= run.latency_ms(0.5) <= 90  # type: ignore[operator]
    assert "misses the goal" in report([run])[-1]


def test_a_short_replay_on_one_pod(pod_spec: PodSpec, photos: list[Path]) -> None:
    """Every request is answered or left at the timeout; none finds the pod unreachable."""
    (run,) = frigate(pod_spec, photos, {"defaults": {}}, rate=5.0, count=30)
    print("\n" + "\n".join(report([run])))
    assert len(run.outcomes) == 30
    assert sum(run.count(fate) for fate in FATES) == 30
    assert run.count(FAILED) == 0
