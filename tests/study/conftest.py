"""Fixtures for the study: result rows shaped like a real sweep, HAProxy, stand-in replicas."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fake_replica import FakeReplica

from iweblens.study.replicas.haproxy import BalancerError, find_haproxy
from iweblens.study.results import append_result

PODS = (1, 2, 3)
THREADS = (1, 2, 4, 8, 16, 32)
REPEATS = 3
SERVICE_S = 0.26  # one request alone on a 0.5-CPU pod
POD_RATE = 3.9  # images/s one saturated 0.5-CPU pod completes

RowFactory = Callable[..., dict[str, Any]]


@pytest.fixture
def make_row() -> RowFactory:
    """A factory of valid result rows; keyword arguments override any column."""

    def build(**overrides: Any) -> dict[str, Any]:
        row = {
            "timestamp": "2025-01-01T00:00:00+00:00",
            "backend": "local",
            "engine": "opencv",
            "pods": 2,
            "threads": 4,
            "repeat": 1,
            "images": 128,
            "mean_s": 0.8125,
            "p50_s": 0.75,
            "p95_s": 1.5,
            "p99_s": 1.75,
            "throughput": 4.5,
            "errors": 0,
            "timeouts": 0,
            "per_replica": {"pod-b": 64, "pod-a": 64},
            "cpu_limit": 0.5,
            "load1": 1.25,
        }
        row.update(overrides)
        return row

    return build


@pytest.fixture
def study_rows(make_row: RowFactory) -> list[dict[str, Any]]:
    """A full 3 x 6 x 3 sweep from a closed-loop queueing model with 5 % noise.

    Latency is the single-request time until threads exceed pods, then threads / (pods x rate):
    the shape a real run has, so the plot and the drafted discussion meet realistic numbers.
    """
    noise = random.Random(7)
    start = datetime(2025, 5, 1, 10, tzinfo=UTC)
    rows = []
    for pods in PODS:
        for threads in THREADS:
            for repeat in range(1, REPEATS + 1):
                ideal = max(SERVICE_S, threads / (pods * POD_RATE))
                mean_s = round(ideal * noise.gauss(1, 0.05), 4)
                replicas = {f"pod-{name}": 128 // pods for name in "abc"[:pods]}
                rows.append(
                    make_row(
                        timestamp=(start + timedelta(seconds=40 * len(rows))).isoformat(),
                        pods=pods,
                        threads=threads,
                        repeat=repeat,
                        mean_s=mean_s,
                        p50_s=round(mean_s * 0.97, 4),
                        p95_s=round(mean_s * 1.4, 4),
                        p99_s=round(mean_s * 1.6, 4),
                        throughput=round(threads / mean_s, 3),
                        per_replica=replicas,
                        load1=round(1 + 0.4 * pods + noise.random() * 0.3, 2),
                    )
                )
    return rows


@pytest.fixture
def study_csv(tmp_path: Path, study_rows: list[dict[str, Any]]) -> Path:
    """``study_rows`` written through the same append path ``iweblens experiment`` uses."""
    path = tmp_path / "results.csv"
    for row in study_rows:
        append_result(path, row)
    return path


@pytest.fixture(scope="session")
def haproxy() -> str:
    """HAProxy's path; tests that need the real balancer skip, saying why, where it is missing."""
    try:
        return find_haproxy()
    except BalancerError as error:
        pytest.skip(str(error))


@pytest.fixture
def fake_replica() -> Iterator[Callable[[str], FakeReplica]]:
    """Start stand-in replicas by name; all are stopped after the test."""
    started: list[FakeReplica] = []

    def start(name: str) -> FakeReplica:
        started.append(FakeReplica(name))
        return started[-1]

    yield start
    for replica in started:
        replica.close()
