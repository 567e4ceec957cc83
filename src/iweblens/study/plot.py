"""The assignment's figure: mean response time against pods, one line per client thread count.

Built on matplotlib's object API with the Agg canvas (no pyplot, no display, no global state), so
it works headless, in threads and inside the report generator.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from iweblens.study.results import ResultRow
from iweblens.study.summary import Cell, by_threads, summarize

MARKERS = "osD^vP*X"
TITLE = "Mean response time vs number of pods"


def _distinct(rows: Sequence[ResultRow], column: Literal["backend", "engine", "cpu_limit"]) -> str:
    values = {row[column] for row in rows}
    shown = sorted(
        "no limit" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        for value in values
    )
    return "/".join(shown)


def describe_setup(rows: Sequence[ResultRow]) -> str:
    """E.g. ``local backend, opencv engine, 0.5 CPU per pod``: what the figure was measured on."""
    return (
        f"{_distinct(rows, 'backend')} backend, {_distinct(rows, 'engine')} engine, "
        f"{_distinct(rows, 'cpu_limit')} CPU per pod"
    )


def draw_figure(cells: Sequence[Cell], *, subtitle: str = "", log_y: bool = False) -> Figure:
    """One line per thread count over the pod counts; error bars are the std over repeats."""
    figure = Figure(figsize=(7.0, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    lines = by_threads(cells)
    # An ordered colour map: the eye reads "more threads" as "further along the scale".
    palette = colormaps["viridis"].resampled(max(len(lines), 2))
    for index, (threads, line) in enumerate(lines.items()):
        axes.errorbar(
            [cell.pods for cell in line],
            [cell.mean_s for cell in line],
            yerr=[cell.std_s for cell in line],
            label=f"{threads} thread{'s' if threads > 1 else ''}",
            marker=MARKERS[index % len(MARKERS)],
            color=palette(index / max(len(lines) - 1, 1) * 0.85),
            capsize=4,
            linewidth=1.6,
        )
    axes.set_xticks(sorted({cell.pods for cell in cells}))
    axes.set_xlabel("Number of pods")
    axes.set_ylabel("Mean response time (s)")
    if log_y:
        axes.set_yscale("log")
        # Plain 0.2, 0.5, 1, 2, 5 labels: seconds are read off the axis, not powers of ten.
        axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axes.yaxis.set_minor_formatter(NullFormatter())
    else:
        axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend(title="Client threads", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axes.set_title(f"{TITLE}\n{subtitle}" if subtitle else TITLE, fontsize=11)
    return figure


def figure_from_results(rows: Sequence[ResultRow], *, log_y: bool = False) -> Figure:
    """The figure for a results CSV's rows, subtitled with the setup they were measured on."""
    if not rows:
        raise ValueError("no result rows to plot")
    return draw_figure(summarize(rows), subtitle=describe_setup(rows), log_y=log_y)


def png_bytes(figure: Figure, dpi: int = 200) -> bytes:
    """The figure as PNG, for embedding without a temporary file."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(figure: Figure, output: Path) -> list[Path]:
    """Write ``output`` as PNG and its SVG twin (same stem); returns both paths."""
    output = Path(output).with_suffix(".png")
    output.parent.mkdir(parents=True, exist_ok=True)
    paths = [output, output.with_suffix(".svg")]
    for path in paths:
        figure.savefig(path, dpi=150)
    return paths
