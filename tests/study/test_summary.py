"""The study's summary per (pods, threads) point, checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import strategies as st

from iweblens.study.summary import by_threads, summarize

latencies = st.lists(
    st.floats(min_value=0.0, max_value=1000.0, allow_nan=False), min_size=1, max_size=200
)


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
