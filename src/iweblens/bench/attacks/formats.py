"""Images whose decode costs far more memory than their bytes or their pixels suggest.

A kilobyte-sized AVIF of 4000 x 3000 (exactly the pixel limit) makes the AV1 decoder hold its
frames and YUV planes beside the output: about three times what a PNG of that size costs. Costed
as a PNG, it is admitted into a pod that has room for a PNG, and the pod is OOM-killed. Each is
sent alone to a fresh pod: the outcome must be 200 or 413, with no OOM kill, and the pod must
serve the next ordinary photograph.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from iweblens.bench.attacks.memory import RequestLimits
from iweblens.bench.attacks.results import AttackResult, Check, statuses_of
from iweblens.bench.http_client import exchange, multipart_body, photo_body, read_metrics
from iweblens.bench.pod import running_pod
from iweblens.bench.variants import AVIFENC, VARIANTS, photo_pixels
from iweblens.harness.manifest import PodSpec

ANSWERED = (200, 413)
# The costliest variant the cost-model table measures at the pixel limit: 12-bit 4:4:4 AVIF,
# where libavif's encoder is installed; else the costliest that OpenCV writes.
COSTLIEST = ("AVIF", "12-bit 4:4:4") if AVIFENC else ("AVIF", "12-bit 4:2:0")


def format_image(photo: Path, format: str, variant: str, size: tuple[int, int]) -> bytes:
    """``photo`` at ``size`` (width, height) written as one variant of the cost-model table."""
    encode = next(v.encode for v in VARIANTS if (v.format, v.name) == (format, variant))
    return encode(photo_pixels(photo, size))


def limit_size(max_pixels: int) -> tuple[int, int]:
    """A camera's 4:3 at exactly ``max_pixels`` where it can be (4000 x 3000 by default)."""
    width = round((max_pixels * 4 / 3) ** 0.5)
    return width, max_pixels // width


def costly_formats(
    spec: PodSpec,
    images: Sequence[Path],
    variants: Sequence[tuple[str, str]] = (("AVIF", "8-bit 4:2:0"), COSTLIEST),
) -> AttackResult:
    """Each variant at the pixel limit, alone on a fresh pod: 200 or 413, 0 OOM kills, and the
    next ordinary photograph served."""
    size = limit_size(RequestLimits.of(spec).max_pixels)
    figures: dict[str, object] = {"size": f"{size[0]}x{size[1]}"}
    checks = []
    cells = []
    for format, variant in variants:
        data = format_image(images[0], format, variant, size)
        name = f"{format} {variant}"
        with running_pod(spec, "costly-formats") as pod:
            budget = read_metrics(pod.url).get("iweblens_memory_budget_bytes")
            outcome = exchange(pod.port, multipart_body(data, "image.avif"), timeout=120)
            next_good = exchange(pod.port, photo_body(images, 1), timeout=60)
            oom_kills = pod.oom_kills()
            peak = pod.peak_memory_bytes()
        status = statuses_of([outcome])
        budget_mib = None if budget is None else round(budget / 2**20, 1)
        figures[name] = {
            "bytes": len(data),
            "budget_mib": budget_mib,
            "status": dict(status),
            "next_good": next_good.status or next_good.failure,
            "oom_kills": oom_kills,
            "peak_memory_mib": None if peak is None else round(peak / 2**20, 1),
        }
        cells.append(
            f"{name} ({len(data)} B): {dict(status)}, OOM kills {oom_kills}, "
            f"budget {budget_mib} MiB"
        )
        checks += [
            Check(f"{name} answered 200 or 413", outcome.status in ANSWERED),
            Check(f"{name}: 0 OOM kills", oom_kills == 0),
            Check(f"{name}: the next photograph served (200)", next_good.status == 200),
        ]
    return AttackResult("costly-formats", figures, checks, "; ".join(cells))
