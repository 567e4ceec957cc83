"""The PDF report: at most two pages, identity at the top, Times 12 pt, 500-word discussion cap."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader

from iweblens import cli
from iweblens.study.discussion import WORD_LIMIT, draft_discussion, word_count
from iweblens.study.report import Identity, ReportError, render_report
from iweblens.study.summary import summarize

IDENTITY = Identity(
    name="Ada Lovelace", tutor="Charles Babbage", login="alov0001", student_id="31234567"
)
POINTS_PER_INCH = 72


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def test_report_layout(study_rows: list[dict[str, Any]]) -> None:
    discussion = draft_discussion(study_rows, summarize(study_rows))
    pdf, pages = render_report(study_rows, IDENTITY, discussion)
    reader = PdfReader(io.BytesIO(pdf))
    assert pages == len(reader.pages) <= 2
    first_page = reader.pages[0].extract_text()
    for label, value in IDENTITY.fields():
        assert f"{label}: {value}" in first_page
    assert first_page.index(IDENTITY.name) < first_page.index("Discussion")
    fonts = {str(font["/BaseFont"]) for font in reader.pages[0]["/Resources"]["/Font"].values()}
    assert "/Times-Roman" in fonts
    assert reader.pages[0].images, "the figure is embedded"
    width, height = (float(side) / POINTS_PER_INCH for side in reader.pages[0].mediabox[2:])
    assert (round(width, 2), round(height, 2)) == (8.27, 11.69)  # A4


def test_table_has_every_point(study_rows: list[dict[str, Any]]) -> None:
    pdf, _ = render_report(study_rows, IDENTITY, "Short discussion.")
    text = text_of(pdf)
    for cell in summarize(study_rows):
        assert f"{cell.mean_s:.3f} \u00b1 {cell.std_s:.3f}" in text


def test_word_limit_enforced(study_rows: list[dict[str, Any]]) -> None:
    longest = " ".join(["queueing"] * WORD_LIMIT)
    _, pages = render_report(study_rows, IDENTITY, longest)
    assert pages <= 2
    with pytest.raises(ReportError, match=f"{WORD_LIMIT + 1} words"):
        render_report(study_rows, IDENTITY, longest + " more")


def test_drafted_discussion_explains_the_data(study_rows: list[dict[str, Any]]) -> None:
    cells = summarize(study_rows)
    draft = draft_discussion(study_rows, cells)
    assert word_count(draft) <= WORD_LIMIT
    one_pod_32, three_pods_32 = (
        next(cell for cell in cells if cell.threads == 32 and cell.pods == pods) for pods in (1, 3)
    )
    assert f"x{one_pod_32.mean_s / three_pods_32.mean_s:.2f}" in draft
    assert "0.5 CPU" in draft
    assert "Little's law" in draft


def test_command_line_drafts_then_uses_the_edited_discussion(
    tmp_path: Path, study_csv: Path, capsys: pytest.CaptureFixture
) -> None:
    output = tmp_path / "report.pdf"
    identity_args = ["--name", "Ada Lovelace", "--tutor", "Charles Babbage"]
    identity_args += ["--login", "alov0001", "--student-id", "31234567"]
    assert cli.main(["report", str(study_csv), "-o", str(output), *identity_args]) == 0
    draft = tmp_path / "report.discussion.txt"
    assert "Little's law" in text_of(output.read_bytes()).replace("\n", " ")
    assert str(draft) in capsys.readouterr().err

    draft.write_text("Edited by the student & checked <carefully>.\n")
    command = ["report", str(study_csv), "-o", str(output), "--discussion", str(draft)]
    assert cli.main([*command, *identity_args]) == 0
    text = text_of(output.read_bytes())
    assert "Edited by the student & checked <carefully>." in text
    assert "Little's law" not in text

    draft.write_text("word " * (WORD_LIMIT + 1))
    output.unlink()
    assert cli.main([*command, *identity_args]) == 2
    assert "limit is 500" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize(
    ("pods", "threads"), [((2,), (1, 2)), ((1, 2), (1,)), ((1, 2), (1, 2)), ((3,), (32,))]
)
def test_small_studies_get_a_report(
    study_rows: list[dict[str, Any]], pods: tuple[int, ...], threads: tuple[int, ...]
) -> None:
    """A partial sweep (an interrupted run, the end-to-end test's 2 x 2) still gets a report."""
    rows = [row for row in study_rows if row["pods"] in pods and row["threads"] in threads]
    discussion = draft_discussion(rows, summarize(rows))
    assert word_count(discussion) <= WORD_LIMIT
    _, pages = render_report(rows, IDENTITY, discussion)
    assert pages <= 2


def test_failed_requests_are_flagged(study_rows: list[dict[str, Any]]) -> None:
    rows = [{**row, "errors": 1} if row["pods"] == 3 else row for row in study_rows]
    pdf, _ = render_report(rows, IDENTITY, draft_discussion(rows, summarize(rows)))
    text = text_of(pdf)
    assert "some requests of this point failed" in text
    assert text.count("*") >= 6
