"""The study's results CSV: one row per load run.

``experiment`` writes it; ``plot`` and ``report`` read it.

One definition of the columns and their types lives here so the writer and the readers cannot drift
apart. Rows are appended one at a time and forced to disk, so an interrupted sweep loses at most the
run in flight and a rerun can resume from what is on disk.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypedDict, cast, get_type_hints


class ResultRow(TypedDict):
    """One load run of the study: the one definition of the CSV's columns, in order, and types."""

    timestamp: str  # ISO 8601, UTC, when the run ended
    backend: str
    engine: str
    pods: int
    threads: int
    repeat: int
    images: int
    mean_s: float
    p50_s: float
    p95_s: float
    p99_s: float
    throughput: float  # successful images per second
    errors: int
    timeouts: int
    per_replica: dict[str, int]  # responses per replica (X-Served-By), 0 for a silent one
    cpu_limit: float | None  # cores per replica; None when no limit could be applied
    load1: float | None  # the machine's 1-minute load average at the end


RESULT_COLUMNS: tuple[str, ...] = tuple(ResultRow.__annotations__)


def format_per_replica(counts: Mapping[str, int]) -> str:
    """``{"pod-a": 43, "pod-b": 42}`` -> ``"pod-a=43;pod-b=42"``, sorted so reruns diff cleanly."""
    return ";".join(f"{name}={counts[name]}" for name in sorted(counts))


def parse_per_replica(text: str) -> dict[str, int]:
    """Inverse of :func:`format_per_replica`; an empty cell means no replica answered."""
    counts: dict[str, int] = {}
    for item in filter(None, text.split(";")):
        name, _, count = item.rpartition("=")
        if not name:
            raise ValueError(f"per_replica item {item!r} is not NAME=COUNT")
        counts[name] = int(count)
    return counts


def _optional_float(text: str) -> float | None:
    """Empty means unknown (e.g. no CPU limit could be applied), which must not read as 0."""
    return float(text) if text else None


# A column's type (as declared in ResultRow) -> how to read its cell.
_PARSERS_BY_TYPE: dict[object, Callable[[str], Any]] = {
    str: str,
    int: int,
    float: float,
    float | None: _optional_float,
    dict[str, int]: parse_per_replica,
}
_PARSERS = {column: _PARSERS_BY_TYPE[kind] for column, kind in get_type_hints(ResultRow).items()}


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == "per_replica" and isinstance(value, Mapping):
        return format_per_replica(value)
    return str(value)


def _complete_text(path: Path) -> str:
    """The file's text without a trailing partial line (a write cut short by a crash)."""
    text = path.read_text(encoding="utf-8")
    return text if text.endswith("\n") else text[: text.rfind("\n") + 1]


def _check_header(header: list[str], path: Path) -> None:
    if tuple(header) != RESULT_COLUMNS:
        raise ValueError(
            f"{path}: header {','.join(header)!r} is not the results header "
            f"{','.join(RESULT_COLUMNS)!r}; write to a new file"
        )


def read_results(path: Path) -> list[ResultRow]:
    """All complete rows of ``path`` with typed values (ints, floats, ``per_replica`` as a dict)."""
    path = Path(path)
    reader = csv.reader(io.StringIO(_complete_text(path)))
    header = next(reader, None)
    if header is None:
        return []
    _check_header(header, path)
    rows: list[ResultRow] = []
    for line_number, cells in enumerate(reader, start=2):
        if len(cells) != len(RESULT_COLUMNS):
            raise ValueError(
                f"{path}:{line_number}: {len(cells)} cells, expected {len(RESULT_COLUMNS)}"
            )
        raw = dict(zip(RESULT_COLUMNS, cells, strict=True))
        rows.append(
            cast(ResultRow, {column: _PARSERS[column](text) for column, text in raw.items()})
        )
    return rows


def append_result(path: Path, row: ResultRow) -> None:
    """Append one run to ``path`` (header first if the file is new) and force it to disk.

    ``per_replica`` may be a mapping or its formatted text; ``None`` becomes an empty cell. A
    partial last line left by an interrupted write is dropped first, so the file stays parseable.
    """
    path = Path(path)
    if set(row) != set(RESULT_COLUMNS):
        missing = sorted(set(RESULT_COLUMNS) - set(row))
        extra = sorted(set(row) - set(RESULT_COLUMNS))
        raise ValueError(f"result row has missing columns {missing} and unknown columns {extra}")
    existing = _complete_text(path) if path.exists() else ""
    if existing:
        _check_header(next(csv.reader(io.StringIO(existing))), path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("r+" if path.exists() else "w", encoding="utf-8", newline="") as handle:
        handle.seek(len(existing.encode("utf-8")))
        handle.truncate()
        writer = csv.writer(handle, lineterminator="\n")
        if not existing:
            writer.writerow(RESULT_COLUMNS)
        cells = cast(Mapping[str, Any], row)
        writer.writerow([_cell(column, cells[column]) for column in RESULT_COLUMNS])
        handle.flush()
        os.fsync(handle.fileno())
