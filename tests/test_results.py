"""The results CSV: typed round trip, one header, and survival of an interrupted write."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from iweblens.results import (
    RESULT_COLUMNS,
    append_result,
    format_per_replica,
    parse_per_replica,
    read_results,
)


def make_row(pods: int = 2, threads: int = 4, repeat: int = 1, **overrides: object) -> dict:
    row = {
        "timestamp": "2025-01-01T00:00:00+00:00",
        "backend": "local",
        "engine": "opencv",
        "pods": pods,
        "threads": threads,
        "repeat": repeat,
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


def test_header_is_the_contract(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    append_result(path, make_row())
    header = path.read_text().splitlines()[0]
    assert header == (
        "timestamp,backend,engine,pods,threads,repeat,images,mean_s,p50_s,p95_s,p99_s,"
        "throughput,errors,timeouts,per_replica,cpu_limit,load1"
    )
    assert tuple(header.split(",")) == RESULT_COLUMNS


def test_round_trip_gives_typed_values(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "results.csv"
    rows = [make_row(pods, threads) for pods in (1, 2) for threads in (1, 8)]
    for row in rows:
        append_result(path, row)
    assert read_results(path) == rows
    assert "pod-a=64;pod-b=64" in path.read_text()


def test_appending_keeps_one_header(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    append_result(path, make_row(repeat=1))
    append_result(path, make_row(repeat=2))
    with path.open(newline="") as handle:
        lines = list(csv.reader(handle))
    assert [cells[0] for cells in lines].count("timestamp") == 1
    assert [int(cells[5]) for cells in lines[1:]] == [1, 2]


def test_unknown_values_stay_unknown(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    append_result(path, make_row(cpu_limit=None, load1=None, per_replica=""))
    (row,) = read_results(path)
    assert row["cpu_limit"] is None
    assert row["load1"] is None
    assert row["per_replica"] == {}


def test_partial_last_line_is_ignored_then_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    append_result(path, make_row(repeat=1))
    with path.open("a") as handle:
        handle.write("2025-01-01T00:01:00+00:00,local,opencv,2,4")  # killed mid-write
    assert [row["repeat"] for row in read_results(path)] == [1]
    append_result(path, make_row(repeat=2))
    assert [row["repeat"] for row in read_results(path)] == [1, 2]


def test_rows_must_have_exactly_the_columns(tmp_path: Path) -> None:
    row = make_row()
    del row["load1"]
    with pytest.raises(ValueError, match="load1"):
        append_result(tmp_path / "results.csv", row)
    with pytest.raises(ValueError, match="bogus"):
        append_result(tmp_path / "results.csv", make_row(bogus=1))


def test_foreign_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        read_results(path)
    with pytest.raises(ValueError, match="header"):
        append_result(path, make_row())
    assert path.read_text() == "a,b\n1,2\n"


def test_missing_or_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert read_results(empty) == []
    with pytest.raises(FileNotFoundError):
        read_results(tmp_path / "absent.csv")


def test_per_replica_text() -> None:
    counts = {"web-7c9f-x2": 3, "127.0.0.1:5001": 5}
    assert parse_per_replica(format_per_replica(counts)) == counts
    assert parse_per_replica("") == {}
    with pytest.raises(ValueError):
        parse_per_replica("no-count")
