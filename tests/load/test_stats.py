"""Statistics used by the load client and the study summary, checked against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from iweblens.load.stats import by_threads, mean, percentile, std, summarize

latencies = st.lists(
    st.floats(min_value=0.0, max_value=1000.0, allow_nan=False), min_size=1, max_size=200
)


@given(latencies, st.floats(min_value=0.0, max_value=100.0))
def test_percentile_matches_numpy(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(np.percentile(values, q), rel=1e-9, abs=1e-9)


@given(latencies)
def test_mean_and_sample_std_match_numpy(values: list[float]) -> None:
    assert mean(values) == pytest.approx(np.mean(values), rel=1e-9, abs=1e-9)
    expected_std = np.std(values, ddof=1) if len(values) > 1 else 0.0
    assert std(values) == pytest.approx(expected_std, rel=1e-6, abs=1e-9)


def test_edge_cases() -> None:
    assert math.isnan(mean([]))
    assert math.isnan(percentile([], 50))
    assert std([]) == std([3.0]) == 0.0
    assert percentile([2.0, 1.0], 0) == 1.0
    assert percentile([2.0, 1.0], 100) == 2.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def run(pods: int, threads: int, mean_s: float, errors: int = 0, timeouts: int = 0) -> dict:
    return {
        "pods": pods,
        "threads": threads,
        "mean_s": mean_s,
        "throughput": threads / mean_s,
        "errors": errors,
        "timeouts": timeouts,
    }


def test_summarize_groups_repeats_per_point() -> None:
    rows = [
        run(2, 4, 1.0),
        run(1, 4, 2.0, errors=1),
        run(1, 4, 4.0, timeouts=2),
        run(1, 1, 0.5),
        run(2, 4, 1.0),
    ]
    cells = summarize(rows)
    assert [(cell.pods, cell.threads) for cell in cells] == [(1, 1), (1, 4), (2, 4)]
    one_pod_four_threads = cells[1]
    assert one_pod_four_threads.mean_s == 3.0
    assert one_pod_four_threads.std_s == pytest.approx(np.std([2.0, 4.0], ddof=1))
    assert one_pod_four_threads.repeats == 2
    assert one_pod_four_threads.errors == 3
    assert one_pod_four_threads.throughput == pytest.approx((2.0 + 1.0) / 2)
    assert cells[2].std_s == 0.0

    lines = by_threads(cells)
    assert list(lines) == [1, 4]
    assert [cell.pods for cell in lines[4]] == [1, 2]
