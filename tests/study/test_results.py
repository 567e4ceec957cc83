"""The results CSV: typed round trip, one header, and survival of an interrupted write."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from iweblens.study.results import (
    RESULT_COLUMNS,
    append_result,
    format_per_replica,
    parse_per_replica,
    read_results,
)

RowFactory = Callable[..., dict]


def test_header_is_the_contract(tmp_path: Path, make_row: RowFactory) -> None:
    path = tmp_path / "results.csv"
    append_result(path, make_row())
    header = path.read_text().splitlines()[0]
    assert header == (
        "timestamp,backend,engine,pods,threads,repeat,images,mean_s,p50_s,p95_s,p99_s,"
        "throughput,errors,timeouts,per_replica,cpu_limit,load1"
    )
    assert tuple(header.split(",")) == RESULT_COLUMNS


def test_round_trip_gives_typed_values(tmp_path: Path, make_row: RowFactory) -> None:
    path = tmp_path / "nested" / "results.csv"
    rows = [make_row(pods=pods, threads=threads) for pods in (1, 2) for threads in (1, 8)]
    for row in rows:
        append_result(path, row)
    assert read_results(path) == rows
    assert "pod-a=64;pod-b=64" in path.read_text()


def test_appending_keeps_one_header(tmp_path: Path, make_row: RowFactory) -> None:
    path = tmp_path / "results.csv"
    append_result(path, make_row(repeat=1))
    append_result(path, make_row(repeat=2))
    with path.open(newline="") as handle:
        lines = list(csv.reader(handle))
    assert [cells[0] for cells in lines].count("timestamp") == 1
    assert [int(cells[5]) for cells in lines[1:]] == [1, 2]


def test_unknown_values_stay_unknown(tmp_path: Path, make_row: RowFactory) -> None:
    path = tmp_path / "results.csv"
    append_result(path, make_row(cpu_limit=None, load1=None, per_replica=""))
    (row,) = read_results(path)
    assert row["cpu_limit"] is None
    assert row["load1"] is None
    assert row["per_replica"] == {}


def test_partial_last_line_is_dropped(tmp_path: Path, make_row: RowFactory) -> None:
    path = tmp_path / "results.csv"
    append_result(path, make_row(repeat=1))
    with path.open("a") as handle:
        handle.write("2025-01-01T00:01:00+00:00,local,opencv,2,4")  # killed mid-write
    assert [row["repeat"] for row in read_results(path)] == [1]
    append_result(path, make_row(repeat=2))
    assert [row["repeat"] for row in read_results(path)] == [1, 2]


def test_rows_must_have_exactly_the_columns(tmp_path: Path, make_row: RowFactory) -> None:
    row = make_row()
    del row["load1"]
    with pytest.raises(ValueError, match="load1"):
        append_result(tmp_path / "results.csv", row)
    with pytest.raises(ValueError, match="bogus"):
        append_result(tmp_path / "results.csv", make_row(bogus=1))


def test_foreign_csv_is_refused(tmp_path: Path, make_row: RowFactory) -> None:
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
