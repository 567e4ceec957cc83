"""The assignment's report as a PDF: identity, figure, table of numbers, discussion; two pages max.

The format rules (single column, 12 pt Times, 1-inch margins, at most two pages, at most 500 words
of discussion) are enforced here rather than left to the author, so a report that breaks them is
never written.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, letter
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import inch
from reportlab.platypus import Image, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from iweblens.study.discussion import check_word_limit
from iweblens.study.plot import describe_setup, figure_from_results, png_bytes
from iweblens.study.results import ResultRow
from iweblens.study.summary import Cell, by_threads, summarize

MAX_PAGES = 2
PAPER_SIZES = {"a4": A4, "letter": letter}
TITLE = "iWebLens: mean response time against pods and client threads"

BODY = ParagraphStyle("body", fontName="Times-Roman", fontSize=12, leading=14.4, spaceAfter=6)
HEADING = ParagraphStyle(
    "heading", parent=BODY, fontName="Times-Bold", fontSize=12, spaceBefore=6, spaceAfter=4
)
TITLE_STYLE = ParagraphStyle("title", parent=BODY, fontName="Times-Bold", fontSize=14, leading=17)
CAPTION = ParagraphStyle("caption", parent=BODY, fontName="Times-Italic")


class ReportError(ValueError):
    """The report would break the assignment's format rules."""


@dataclass(frozen=True)
class Identity:
    """The four fields the assignment wants at the top of the report."""

    name: str
    tutor: str
    login: str
    student_id: str

    def fields(self) -> list[tuple[str, str]]:
        return [
            ("Name", self.name),
            ("Tutor", self.tutor),
            ("Login", self.login),
            ("Student ID", self.student_id),
        ]


def _identity_table(identity: Identity) -> Table:
    cells = [
        [Paragraph(f"<b>{label}:</b> {escape(value)}", BODY) for label, value in pair]
        for pair in (identity.fields()[:2], identity.fields()[2:])
    ]
    table = Table(cells, colWidths="50%")
    table.setStyle(TableStyle([("LEFTPADDING", (0, 0), (-1, -1), 0)]))
    return table


def _numbers_table(cells: Sequence[Cell]) -> Table:
    pods = sorted({cell.pods for cell in cells})
    header = ["Threads", *(f"{count} pod{'s' if count > 1 else ''}" for count in pods)]
    rows = [header]
    for threads, line in by_threads(cells).items():
        by_pods = {cell.pods: cell for cell in line}
        row = [str(threads)]
        for count in pods:
            cell = by_pods.get(count)
            if cell is None:
                row.append("-")
            else:
                failed = "*" if cell.errors else ""
                row.append(f"{cell.mean_s:.3f} \u00b1 {cell.std_s:.3f}{failed}")
        rows.append(row)
    table = Table(rows, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), "Times-Roman", 12),
                ("FONT", (0, 0), (-1, 0), "Times-Bold", 12),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("LINEABOVE", (0, 0), (-1, 0), 0.8, colors.black),
                ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
                ("LINEBELOW", (0, -1), (-1, -1), 0.8, colors.black),
                ("TOPPADDING", (0, 0), (-1, -1), 1),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
            ]
        )
    )
    return table


def _measured_when(rows: Sequence[ResultRow]) -> str:
    days = sorted({datetime.fromisoformat(row["timestamp"]).date().isoformat() for row in rows})
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def render_report(
    rows: Sequence[ResultRow],
    identity: Identity,
    discussion: str,
    *,
    paper: str = "a4",
    log_y: bool = False,
) -> tuple[bytes, int]:
    """The PDF's bytes and its page count; raises :class:`ReportError` if a format rule breaks."""
    if not rows:
        raise ReportError("no result rows to report")
    try:
        check_word_limit(discussion)
    except ValueError as exc:
        raise ReportError(str(exc)) from None
    cells = summarize(rows)
    page_width, _ = PAPER_SIZES[paper]
    text_width = page_width - 2 * inch
    figure = figure_from_results(rows, log_y=log_y)
    fig_width, fig_height = figure.get_size_inches()
    runs = len(rows)
    story = [
        _identity_table(identity),
        Spacer(1, 8),
        Paragraph(TITLE, TITLE_STYLE),
        Image(io.BytesIO(png_bytes(figure)), text_width, text_width * fig_height / fig_width),
        Paragraph(
            f"Figure 1. Mean of the per-run mean response time (error bars: sample standard "
            f"deviation over repeats); {escape(describe_setup(rows))}; {runs} runs measured "
            f"{_measured_when(rows)}.",
            CAPTION,
        ),
        Paragraph("Mean response time in seconds (mean \u00b1 std over repeats)", HEADING),
        _numbers_table(cells),
    ]
    if any(cell.errors for cell in cells):
        story.append(Paragraph("* some requests of this point failed or timed out.", CAPTION))
    story.append(Paragraph("Discussion", HEADING))
    story += [
        Paragraph(escape(" ".join(paragraph.split())), BODY)
        for paragraph in discussion.split("\n\n")
        if paragraph.strip()
    ]
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=PAPER_SIZES[paper],
        leftMargin=inch,
        rightMargin=inch,
        topMargin=inch,
        bottomMargin=inch,
        title=TITLE,
        author=identity.name,
    )
    document.build(story)
    if document.page > MAX_PAGES:
        raise ReportError(f"the report needs {document.page} pages; the limit is {MAX_PAGES}")
    return buffer.getvalue(), document.page
