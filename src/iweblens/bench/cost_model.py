"""``iweblens bench-decode cost``: the cost model held against what decoding really costs.

For every accepted format and variant, at a small size, about 3 MP and the limits, a sample is
generated in code, and its decode + letterbox (the service's own ``decode_image`` with the network
input, then the service's ``Letterboxer``) is run in a fresh process: the peak resident memory
growth over the warmed-up process (the kernel's high-water mark, VmHWM) and the process CPU time
(every thread: AV1 decodes in several) are set beside ``decode_cost`` and ``work_units``. The CPU
prediction is ``(work_units - 1)`` times the seconds of one work unit, measured in the same run as
the process CPU of decode + letterbox + forward of a 640x480 photograph. A row fails when a
measurement exceeds its prediction.
"""

from __future__ import annotations

import datetime
import multiprocessing
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL

from iweblens.bench.decoding import status_kib
from iweblens.bench.variants import (
    VARIANTS,
    WARM_SIZE,
    Variant,
    photo_pixels,
    sizes,
)
from iweblens.config import Settings
from iweblens.detection import ImageDecodeError
from iweblens.inference.cost import decode_cost, work_units
from iweblens.inference.images import read_header

MiB = 2**20
UNIT_ROUNDS = 7
REFUSED = "refused"


# ----------------------------------------------------------------------------- measuring


@dataclass(frozen=True)
class Measured:
    """A fresh process's decode + letterbox of one file: peak growth (bytes), CPU (seconds)."""

    peak_bytes: int
    cpu_s: float
    error: str | None = None


def _measure(path: str, warm_path: str, input_size: int, queue: multiprocessing.Queue[Any]) -> None:
    """In a fresh process: decode + letterbox ``path`` after one of ``warm_path``.

    ``ru_maxrss`` would carry the peak of the process this one was spawned from, so the kernel's
    high-water mark is reset (``clear_refs`` 5) and read from ``/proc/self/status``. The warm-up
    decode loads the codec's libraries and first buffers, as any server has long before.
    """
    from iweblens.detection import ImageDecodeError
    from iweblens.inference.letterbox import Letterboxer
    from iweblens.inference.pixels import decode_image, limit_decoded_pixels

    limit_decoded_pixels(Settings.max_declared_pixels)
    letterboxer = Letterboxer(input_size)
    try:
        letterboxer(decode_image(Path(warm_path).read_bytes(), input_size).pixels)
    except ImageDecodeError as error:
        queue.put(Measured(0, 0.0, str(error)))
        return
    data = Path(path).read_bytes()
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib("VmRSS")
    started = time.process_time()
    try:
        letterboxer(decode_image(data, input_size).pixels)
    except ImageDecodeError as error:
        queue.put(Measured(0, 0.0, str(error)))
        return
    cpu = time.process_time() - started
    queue.put(Measured((status_kib("VmHWM") - before) * 1024, cpu))


def _unit(photo: str, settings: Settings, queue: multiprocessing.Queue[Any]) -> None:
    """In a fresh process: the median process CPU of one work unit, as an inference thread of a
    pod runs it (one compute thread): decode, letterbox, forward, postprocess of ``photo``."""
    from iweblens.inference.detector import Detector
    from iweblens.inference.engines import set_compute_threads
    from iweblens.models.store import ModelStore

    set_compute_threads(1)
    paths = ModelStore.in_cache(settings.model_dir, progress=False).verified_paths()
    detector = Detector.from_settings(settings, paths, "opencv")
    data = Path(photo).read_bytes()
    laps = []
    for round_ in range(UNIT_ROUNDS + 2):
        started = time.process_time()
        detector.run(data)
        if round_ >= 2:  # the first forwards allocate the network's buffers
            laps.append(time.process_time() - started)
    queue.put(statistics.median(laps))


def _in_fresh_process(target: Callable[..., None], *args: Any) -> Any:
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[Any] = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    try:
        return queue.get(timeout=600)
    finally:
        process.join()


def measure(data: bytes, warm: bytes, input_size: int) -> Measured:
    """Peak memory growth and CPU of decode + letterbox of ``data``, in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="iweblens-cost-") as folder:
        path, warm_path = Path(folder) / "sample", Path(folder) / "warm"
        path.write_bytes(data)
        warm_path.write_bytes(warm)
        result: Measured = _in_fresh_process(_measure, str(path), str(warm_path), input_size)
        return result


def unit_seconds(photo: Path, settings: Settings) -> float:
    """Process CPU seconds of one work unit (a 640x480 photograph's inference), fresh process."""
    return float(_in_fresh_process(_unit, str(photo), settings))


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Row:
    """One sample: its prediction beside its measurement (``measured`` None: refused)."""

    variant: Variant
    size: tuple[int, int]
    encoded_bytes: int
    predicted_bytes: int
    units: float
    reduction: int
    measured: Measured

    def predicted_cpu_s(self, unit_s: float) -> float:
        return (self.units - 1) * unit_s

    def holds(self, unit_s: float) -> bool:
        """True when the prediction is at or above the measurement (a refusal holds)."""
        if self.measured.error is not None:
            return True
        return (
            self.measured.peak_bytes <= self.predicted_bytes
            and self.measured.cpu_s <= self.predicted_cpu_s(unit_s)
        )


def sample(variant: Variant, size: tuple[int, int], photo: Path, settings: Settings) -> Row:
    """Write ``variant`` at ``size`` from ``photo``, predict its cost and measure it (a sample the
    header reader refuses is not decoded: the service answers it 400 or 415)."""
    data = variant.encode(photo_pixels(photo, size))
    try:
        header = read_header(data, settings.input_size)
    except ImageDecodeError as error:
        return Row(variant, size, len(data), 0, 1.0, 1, Measured(0, 0.0, str(error)))
    warm = variant.encode(photo_pixels(photo, WARM_SIZE))
    measured = measure(data, warm, settings.input_size)
    return Row(
        variant,
        size,
        len(data),
        decode_cost(header),
        work_units(header),
        header.reduction,
        measured,
    )


def rows(
    photo: Path,
    settings: Settings,
    variants: Sequence[Variant] = VARIANTS,
    pick: Callable[[Variant], Sequence[tuple[int, int]]] = sizes,
    log: Callable[[str], object] = print,
) -> Iterator[Row]:
    for variant in variants:
        for size in pick(variant):
            row = sample(variant, size, photo, settings)
            log(f"{variant.format} {variant.name} {size[0]}x{size[1]}: {row.measured}")
            yield row


def table(measured: Sequence[Row], unit_s: float) -> list[str]:
    """The markdown table: format x variant x size, predicted beside measured."""
    lines = [
        "| format | variant | size | bytes | decode | MiB predicted | MiB measured "
        "| CPU ms predicted | CPU ms measured | holds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in measured:
        width, height = row.size
        decode = "full" if row.reduction == 1 else f"1/{row.reduction}"
        if row.measured.error is not None:
            lines.append(
                f"| {row.variant.format} | {row.variant.name} | {width}x{height} "
                f"| {row.encoded_bytes} | - | - | {REFUSED} | - | {REFUSED} | yes |"
            )
            continue
        lines.append(
            f"| {row.variant.format} | {row.variant.name} | {width}x{height} "
            f"| {row.encoded_bytes} | {decode} | {row.predicted_bytes / MiB:.1f} "
            f"| {row.measured.peak_bytes / MiB:.1f} | {row.predicted_cpu_s(unit_s) * 1000:.0f} "
            f"| {row.measured.cpu_s * 1000:.0f} | {'yes' if row.holds(unit_s) else '**no**'} |"
        )
    return lines


def machine() -> list[str]:
    """The CPU model, its ISA flags, the date and the decoders' versions, for the record."""
    from PIL import features

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = dict(
        line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line and line.strip()
    )
    model = fields.get("model name\t", platform.processor()).strip()
    flags = fields.get("flags\t\t", "").split()
    isa = [f for f in flags if f.startswith(("avx", "sse4", "fma", "amx"))]
    versions = {
        name: features.version(name)
        for name in ("libjpeg_turbo", "zlib", "webp", "libtiff", "avif")
    }
    return [
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- CPU: {model}; ISA flags: {' '.join(isa)}",
        f"- OpenCV {cv2.__version__}, Pillow {PIL.__version__}, NumPy {np.__version__}; "
        "Pillow's libraries: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
    ]


def cost_document(photo: Path, settings: Settings, log: Callable[[str], object] = print) -> str:
    """``docs/cost-model.md``: every variant at every size, and the unit measured alongside."""
    unit_s = unit_seconds(photo, settings)
    log(f"one work unit: {unit_s * 1000:.1f} ms of CPU")
    measured = list(rows(photo, settings, log=log))
    failed = sum(not row.holds(unit_s) for row in measured)
    lines = [
        "# The cost model, measured",
        "",
        "Generated by `iweblens bench-decode cost` (`src/iweblens/bench/cost_model.py`, its "
        "samples from `variants.py`); the model "
        "is `src/iweblens/inference/cost.py`, explained in `docs/decoding.md`. Each row is one "
        "sample written in code from a photograph (resized, with a camera's noise), decoded by the "
        "service's `decode_image` at the network input and letterboxed, in a fresh process. "
        '"refused": the service answers it 400 or 415 without decoding.',
        "",
        *table(measured, unit_s),
        "",
        f"One work unit (decode + letterbox + forward of {photo.name}, one compute thread, "
        f"median of {UNIT_ROUNDS}): {unit_s * 1000:.1f} ms of process CPU. CPU predicted = "
        "(work_units - 1) x one unit; measured = process CPU (every thread) of decode + "
        "letterbox. Memory: peak resident growth (VmHWM after clear_refs) of decode + letterbox "
        "over a process warmed up with a small sample of the same variant. "
        f"Rows where measured exceeds predicted: {failed}.",
        "",
        *machine(),
        "",
    ]
    return "\n".join(lines)
