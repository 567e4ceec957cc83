"""Statistics of the load client (and the study summary), checked against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from iweblens.load.stats import mean, percentile, std

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
