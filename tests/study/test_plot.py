"""The pods x threads figure: one line per thread count, written as real PNG and SVG files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from iweblens import cli
from iweblens.study.plot import figure_from_results, save_figure
from iweblens.study.summary import summarize

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_one_line_per_thread_count(study_rows: list[dict[str, Any]]) -> None:
    figure = figure_from_results(study_rows)
    (axes,) = figure.axes
    threads = sorted({row["threads"] for row in study_rows})
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend == [f"{count} thread{'s' if count > 1 else ''}" for count in threads]
    assert list(axes.get_xticks()) == [1, 2, 3]
    assert axes.get_xlabel() and axes.get_ylabel() and axes.get_title()
    cells = {(cell.pods, cell.threads): cell.mean_s for cell in summarize(study_rows)}
    for count, errorbar in zip(threads, axes.containers, strict=True):
        data_line = errorbar.lines[0]
        assert list(data_line.get_ydata()) == [cells[pods, count] for pods in (1, 2, 3)]


def test_png_and_svg_written(tmp_path: Path, study_rows: list[dict[str, Any]]) -> None:
    png, svg = save_figure(figure_from_results(study_rows), tmp_path / "out" / "plot.png")
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert svg == tmp_path / "out" / "plot.svg"
    assert "<svg" in svg.read_text()


def test_command_line(tmp_path: Path, study_csv: Path, capsys: pytest.CaptureFixture) -> None:
    output = tmp_path / "figure.png"
    assert cli.main(["plot", str(study_csv), "-o", str(output), "--log-y"]) == 0
    assert output.read_bytes().startswith(PNG_SIGNATURE)
    assert output.with_suffix(".svg").exists()
    assert str(output) in capsys.readouterr().out


def test_no_rows_is_an_error() -> None:
    with pytest.raises(ValueError, match="no result rows"):
        figure_from_results([])
