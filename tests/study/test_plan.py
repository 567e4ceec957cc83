"""The sweep's order and its resume rule."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from iweblens.load.client import LoadResult
from iweblens.study.experiment import Point, pending, plan, result_row, served_counts
from iweblens.study.results import append_result, read_results


def test_pods_vary_slowest_and_each_repeat_is_a_whole_thread_sweep() -> None:
    points = plan((1, 2), (1, 4), 2)
    assert points == [
        Point(1, 1, 1), Point(1, 4, 1), Point(1, 1, 2), Point(1, 4, 2),
        Point(2, 1, 1), Point(2, 4, 1), Point(2, 1, 2), Point(2, 4, 2),
    ]  # fmt: skip


def test_default_study_has_every_point_once() -> None:
    points = plan((1, 2, 3), (1, 2, 4, 8, 16, 32), 3)
    assert len(points) == len(set(points)) == 54


RESULT = LoadResult(
    images=4, wall_s=1.0, mean_s=0.25, p50_s=0.25, p90_s=0.3, p95_s=0.3, p99_s=0.3,
    throughput=4.0, errors=0, timeouts=0, per_replica={"replica-1": 4}, latencies=[0.25] * 4,
)  # fmt: skip


def record(path: Path, point: Point, backend: str = "local", engine: str = "opencv") -> None:
    stand_in = SimpleNamespace(name=backend, cpu_limit=0.5)
    row = result_row(stand_in, engine, point, RESULT, served_counts(RESULT, ["replica-1"]))
    append_result(path, row)


@pytest.fixture
def half_done(tmp_path: Path) -> Path:
    """A results CSV holding the first three runs of a 1,2 x 1,4 x 2 local study, and others."""
    path = tmp_path / "results.csv"
    for point in plan((1, 2), (1, 4), 2)[:3]:
        record(path, point)
    record(path, Point(2, 1, 1), backend="docker")
    record(path, Point(2, 4, 1), engine="onnxruntime")
    return path


def test_rows_carry_the_point_the_backend_and_a_zero_for_a_silent_replica(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    stand_in = SimpleNamespace(name="local", cpu_limit=None)
    counts = served_counts(RESULT, ["replica-1", "replica-2"])
    append_result(path, result_row(stand_in, "opencv", Point(2, 8, 3), RESULT, counts))
    (row,) = read_results(path)
    assert (row["backend"], row["pods"], row["threads"], row["repeat"]) == ("local", 2, 8, 3)
    assert row["per_replica"] == {"replica-1": 4, "replica-2": 0}
    assert row["cpu_limit"] is None  # no limit applied reads as unknown, never as 0
    assert row["load1"] is not None


def test_resume_skips_exactly_the_finished_points_of_this_backend_and_engine(
    half_done: Path,
) -> None:
    rows = read_results(half_done)
    todo = pending(plan((1, 2), (1, 4), 2), rows, "local", "opencv")
    assert todo == [Point(1, 4, 2), *[p for p in plan((1, 2), (1, 4), 2) if p.pods == 2]]
    assert pending(plan((1, 2), (1, 4), 2), rows, "docker", "opencv") == [
        p for p in plan((1, 2), (1, 4), 2) if p != Point(2, 1, 1)
    ]
    assert pending(plan((1,), (1,), 1), rows, "local", "opencv") == []
