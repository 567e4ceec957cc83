"""A first draft of the report's discussion, written from the measured numbers.

The draft states what the data shows (scaling ratios, where more pods or more threads stop
helping) and the standard explanation (a CPU quota caps each pod's throughput; a closed-loop client
beyond that cap only queues). It is a starting point for the student to check and rewrite, which
is why it is also saved as a text file next to the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from iweblens.study.results import ResultRow
from iweblens.study.summary import Cell, by_threads

WORD_LIMIT = 500
WORTHWHILE_GAIN = 1.10  # below a 10 % improvement, adding a pod or doubling threads "stops helping"


def word_count(text: str) -> int:
    """Words as a reader counts them: whitespace-separated tokens."""
    return len(text.split())


def check_word_limit(text: str, limit: int = WORD_LIMIT) -> None:
    """Refuse a discussion over the assignment's limit instead of silently truncating it."""
    words = word_count(text)
    if words > limit:
        raise ValueError(f"the discussion has {words} words; the limit is {limit}")


def _threads(count: int) -> str:
    return f"{count} thread{'s' if count > 1 else ''}"


def _pods(count: int) -> str:
    return f"{count} pod{'s' if count > 1 else ''}"


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def _pods_paragraph(lines: dict[int, list[Cell]]) -> str:
    ratios = []
    for threads, line in lines.items():
        steps = ", ".join(
            f"x{line[0].mean_s / cell.mean_s:.2f} ({_pods(cell.pods)})" for cell in line[1:]
        )
        if steps:
            ratios.append(f"{_threads(threads)} {steps}")
    baseline = min(cell.pods for line in lines.values() for cell in line)
    text = (
        f"Adding pods: relative to {_pods(baseline)}, the mean response time is divided by "
        f"{'; '.join(ratios)}. Perfect scaling would divide it by the ratio of pod counts."
    )
    idle: list[str] = []
    contended: list[str] = []
    for threads, line in lines.items():
        for before, after in pairwise(line):
            if before.mean_s / after.mean_s < WORTHWHILE_GAIN:
                stall = f"{_threads(threads)} ({before.pods} to {_pods(after.pods)})"
                (idle if threads <= before.pods else contended).append(stall)
                break
    if idle:
        text += (
            f" Adding a pod gains less than 10 % for {', '.join(idle)}: with no more requests "
            "in flight than pods, the extra pods sit idle."
        )
    if contended:
        text += (
            f" It also gains less than 10 % for {', '.join(contended)}, although requests are "
            "queueing there; the bottleneck is then outside the pods (the host's CPUs or the "
            "balancer), which the load average column helps to confirm."
        )
    return text


def _threads_paragraph(cells: Sequence[Cell]) -> str:
    sentences = []
    for pods in sorted({cell.pods for cell in cells}):
        line = sorted((cell for cell in cells if cell.pods == pods), key=lambda cell: cell.threads)
        saturated = next(
            (
                before
                for before, after in pairwise(line)
                if after.throughput < WORTHWHILE_GAIN * before.throughput
            ),
            None,
        )
        peak = max(line, key=lambda cell: cell.throughput)
        if saturated is None:
            sentences.append(
                f"with {_pods(pods)} throughput was still rising at "
                f"{line[-1].threads} threads ({line[-1].throughput:.1f} images/s)"
            )
        else:
            sentences.append(
                f"with {_pods(pods)} throughput levels off at about "
                f"{peak.throughput:.1f} images/s from {_threads(saturated.threads)} on"
            )
    return (
        "Adding threads: "
        + "; ".join(sentences)
        + ". Past that point more threads do not get more work done; they only make each "
        "request wait longer, so the mean response time grows roughly in proportion to the "
        "number of threads."
    )


def _why_paragraph(cells: Sequence[Cell], cpu_limit: str) -> str:
    single = [cell for cell in cells if cell.threads == 1] or list(cells)
    service = min(cell.mean_s for cell in single)
    fewest = min(cell.pods for cell in cells)
    capacity = max(cell.throughput for cell in cells if cell.pods == fewest) / fewest
    text = (
        f"Why: each pod is limited to {cpu_limit} CPU, so a busy pod completes at most about "
        f"{capacity:.1f} images/s however many requests it holds, and a lone request takes "
        f"about {_seconds(service)}. The client is a closed loop: each of its T threads sends "
        "the next image only when the previous answer arrives, so T requests are always in "
        "the system. While T is at most the number of pods P, every request finds a free pod "
        "and the response time stays near the single-request time. Once T exceeds P, all pods "
        "are saturated and the requests queue; by Little's law the mean response time is then "
        f"about T / (P x {capacity:.1f}) seconds."
    )
    busiest = max(cells, key=lambda cell: (cell.threads, cell.pods))
    if capacity > 0 and busiest.threads > busiest.pods:
        predicted = busiest.threads / (busiest.pods * capacity)
        text += (
            f" For {_threads(busiest.threads)} on {_pods(busiest.pods)} this predicts "
            f"{_seconds(predicted)} against {_seconds(busiest.mean_s)} measured."
        )
    return text + (
        " Where the measured gain from more pods falls short of the ideal, the cost lies outside "
        "the pods: the client, the load balancer and the host's shared CPUs."
    )


def draft_discussion(rows: Sequence[ResultRow], cells: Sequence[Cell]) -> str:
    """Paragraphs (separated by blank lines) describing and explaining ``cells``."""
    repeats = sorted({cell.repeats for cell in cells})
    images = sorted({row["images"] for row in rows})
    limits = sorted({f"{row['cpu_limit']:g}" for row in rows if row["cpu_limit"] is not None})
    cpu_limit = "/".join(limits) or "an unknown"
    loads = [row["load1"] for row in rows if row["load1"] is not None]
    setup = (
        f"Each point is the mean over {'-'.join(map(str, repeats))} "
        f"run{'s' if repeats != [1] else ''} of the mean "
        f"response time of {'/'.join(map(str, images))} images, with error bars showing the "
        f"standard deviation over the repeats; each pod had {cpu_limit} CPU."
    )
    if loads:
        setup += (
            f" The host's one-minute load average was {min(loads):.2f} to {max(loads):.2f} "
            "during the runs."
        )
    if sum(cell.errors for cell in cells):
        setup += " Some runs had failed requests; those points are marked in the table."
    paragraphs = [setup]
    lines = by_threads(cells)
    if len({cell.pods for cell in cells}) > 1:
        paragraphs.append(_pods_paragraph(lines))
    if len(lines) > 1:
        paragraphs.append(_threads_paragraph(cells))
    paragraphs.append(_why_paragraph(cells, cpu_limit))
    return "\n\n".join(paragraphs)
