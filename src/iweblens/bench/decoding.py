"""``iweblens bench-decode``: what size-aware JPEG decoding costs and what it changes (issue 16).

Three measurements, each printed as a table:

- *agreement*: the photographs are upscaled to 12 and 24 megapixels with Gaussian noise (camera
  photos compress worse than smooth upscales) and saved as JPEG; their detections at full size
  and at each DCT-domain reduction (1/2, 1/4, 1/8) are compared with the 640-px original's (boxes
  scaled), by F1 (IoU >= 0.5, same label), and by the service's own decode (``the rule``);
- *CPU*: thread CPU ms per 12 MP image of decode + letterbox, full size against the service's
  rule, in alternated rounds (A/B/A/B...), medians with the spread of the round medians;
- *memory*: peak RSS growth (the kernel's high-water mark, VmHWM) of decode + letterbox in a
  fresh process per file, beside ``decode_cost``'s estimate, for 640-px, 4096x4096 and 12-48 MP
  baseline and progressive files.
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from iweblens.bench.agreement import F1Tally
from iweblens.config import Settings
from iweblens.detection import Detection
from iweblens.inference.images import REDUCTIONS, read_header
from iweblens.inference.pixels import decode_image, decode_with_opencv

if TYPE_CHECKING:
    from iweblens.inference.detector import Detector

NOISE_SIGMA = 6.0  # grey levels; 12 MP at quality 90 then weighs ~3 MB, like a phone photo
JPEG_QUALITY = 90
SIZES_MP = (12, 24)
CPU_ROUNDS = 5
RULE = 0  # the service's own choice of scale, per photo


@dataclass(frozen=True)
class Upscaled:
    """One photograph made large: its file, the factor applied and the original's detections."""

    path: Path
    factor: float
    reference: list[Detection]


def upscale(image: np.ndarray, megapixels: float, seed: int) -> tuple[np.ndarray, float]:
    """Cubic upscale to about ``megapixels``, with Gaussian noise; returns (pixels, factor)."""
    height, width = image.shape[:2]
    factor = (megapixels * 1e6 / (width * height)) ** 0.5
    size = (round(width * factor), round(height * factor))
    large = cv2.resize(image, size, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    large += np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, size=large.shape)
    return np.clip(large, 0, 255).astype(np.uint8), size[0] / width


def read_photo(path: Path) -> np.ndarray:
    """A photograph's BGR pixels (``OSError`` if OpenCV cannot read it)."""
    image = cv2.imread(str(path))
    if image is None:
        raise OSError(f"cannot read {path}")
    return image


def scaled(detections: Sequence[Detection], factor: float) -> list[Detection]:
    return [
        Detection(
            d.label,
            d.confidence,
            round(d.left * factor),
            round(d.top * factor),
            round(d.width * factor),
            round(d.height * factor),
        )
        for d in detections
    ]


def write_upscaled(
    path: Path, megapixels: float, seed: int, folder: Path
) -> tuple[Path, np.ndarray, float]:
    """The photograph at ``path`` upscaled (``upscale``) and saved as JPEG in ``folder``: returns
    the new file, the original's pixels and the factor."""
    original = read_photo(path)
    large, factor = upscale(original, megapixels, seed)
    target = folder / f"{path.stem}-{megapixels:g}mp.jpg"
    cv2.imwrite(str(target), large, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return target, original, factor


def make_upscaled(
    images: Sequence[Path], megapixels: float, folder: Path, detector: Detector
) -> Iterator[Upscaled]:
    """Write each photograph upscaled to ``folder``, with its original's detections."""
    for index, path in enumerate(images):
        target, original, factor = write_upscaled(path, megapixels, index, folder)
        yield Upscaled(target, factor, scaled(detector.detect(original), factor))


def reduced_decode_agreement(
    images: Sequence[Path],
    settings: Settings,
    log: object = print,
    sizes_mp: Sequence[float] = SIZES_MP,
) -> list[str]:
    """F1 against the 640-px originals at full size, at every reduction and by the service's rule
    (which picks 1/4 or 1/8 per photo by its long side), per size in MP."""
    from iweblens.inference.detector import Detector
    from iweblens.models.store import ModelStore

    paths = ModelStore.in_cache(settings.model_dir, progress=False).verified_paths()
    detector = Detector.from_settings(settings, paths, "opencv")
    lines = [
        "| size | decode | decoded long sides | F1 vs 640-px original | detections |",
        "| --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="iweblens-bench-decode-") as folder:
        for megapixels in sizes_mp:
            tallies = {r: F1Tally() for r in (1, *REDUCTIONS, RULE)}
            counts = dict.fromkeys(tallies, 0)
            sides: dict[int, list[int]] = {r: [] for r in tallies}
            for item in make_upscaled(images, megapixels, Path(folder), detector):
                data = item.path.read_bytes()
                header = read_header(data, settings.input_size)
                for reduction in tallies:
                    if reduction == RULE:
                        pixels = decode_image(data, settings.input_size).pixels
                    else:
                        reduced = decode_with_opencv(data, reduction)
                        if reduced is None:
                            raise OSError(f"OpenCV cannot decode {item.path}")
                        pixels = reduced
                    sides[reduction].append(max(pixels.shape[:2]))
                    found = detector.detect(pixels, size=(header.width, header.height))
                    tallies[reduction].add(item.reference, found)
                    counts[reduction] += len(found)
                item.path.unlink()
            log(f"agreement at {megapixels:g} MP done")  # type: ignore[operator]
            for reduction, tally in tallies.items():
                name = {1: "full", RULE: "the rule"}.get(reduction, f"1/{reduction}")
                lines.append(
                    f"| {megapixels:g} MP | {name} | {min(sides[reduction])}-"
                    f"{max(sides[reduction])} | {tally.f1:.4f} | {counts[reduction]} |"
                )
    lines.append(
        f"\n{len(images)} photographs, noise sigma {NOISE_SIGMA}, JPEG quality {JPEG_QUALITY}; "
        "the rule: the service's decode (long side >= 2 x the network input)."
    )
    return lines


def cpu(
    images: Sequence[Path], settings: Settings, megapixels: float = 12, rounds: int = CPU_ROUNDS
) -> list[str]:
    """Thread CPU ms per image of decode + letterbox: full size (A) against the rule (B)."""
    from iweblens.inference.letterbox import Letterboxer
    from iweblens.inference.pixels import decode_image

    input_size = settings.input_size
    letterboxer = Letterboxer(input_size)
    payloads = []
    for index, path in enumerate(images):
        large, _ = upscale(read_photo(path), megapixels, seed=index)
        encoded = cv2.imencode(".jpg", large, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]
        payloads.append(encoded.tobytes())
    variants = {"full size": None, "size-aware": input_size}
    medians: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, size in variants.items():  # alternated: A, B, A, B...
            laps = []
            for data in payloads:
                started = time.thread_time()
                letterboxer(decode_image(data, size).pixels)
                laps.append((time.thread_time() - started) * 1000)
            medians[name].append(statistics.median(laps))
    lines = [
        f"| {megapixels:g} MP decode + letterbox | CPU ms per image, median of {rounds} rounds "
        "| round medians (min-max) |",
        "| --- | --- | --- |",
    ]
    for name, values in medians.items():
        lines.append(
            f"| {name} | {statistics.median(values):.1f} | {min(values):.1f}-{max(values):.1f} |"
        )
    lines.append(
        f"\n{len(payloads)} photographs upscaled with noise, JPEG quality {JPEG_QUALITY}; "
        "thread CPU clock (time.thread_time), rounds alternated."
    )
    return lines


# ----------------------------------------------------------------------------- memory


MEMORY_CASES = (
    ("640x480 baseline", 640, 480, False, 2),
    ("4096x4096 baseline", 4096, 4096, False, 2),
    ("12 MP baseline 4:2:0", 4000, 3000, False, 2),
    ("24 MP baseline 4:2:0", 6000, 4000, False, 2),
    ("24 MP progressive 4:2:0", 6000, 4000, True, 2),
    ("24 MP progressive 4:4:4", 6000, 4000, True, 1),
    ("48 MP baseline 4:2:0", 8064, 6048, False, 2),
    ("48 MP progressive 4:2:0", 8064, 6048, True, 2),
)


def _measure_peak(path: str, input_size: int | None, queue: multiprocessing.Queue[int]) -> None:
    """In a fresh process: peak RSS growth (bytes) of decode + letterbox of one file.

    ``ru_maxrss`` would carry the peak of the process this one was forked from (Linux keeps it
    across exec), so the kernel's high-water mark is reset (``clear_refs`` 5) and read from
    ``/proc/self/status`` (VmHWM) instead.
    """
    from iweblens.inference.images import DEFAULT_INPUT_SIZE
    from iweblens.inference.letterbox import Letterboxer
    from iweblens.inference.pixels import decode_image, limit_decoded_pixels

    limit_decoded_pixels(10**9)
    letterboxer = Letterboxer(input_size or DEFAULT_INPUT_SIZE)
    data = Path(path).read_bytes()
    warm = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))[1].tobytes()
    letterboxer(decode_image(warm, input_size).pixels)
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib("VmRSS")
    letterboxer(decode_image(data, input_size).pixels)
    queue.put((status_kib("VmHWM") - before) * 1024)


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_bytes(path: Path, input_size: int | None) -> int:
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[int] = context.Queue()
    process = context.Process(target=_measure_peak, args=(str(path), input_size, queue))
    process.start()
    peak = queue.get(timeout=600)
    process.join()
    return int(peak)


def memory(source: Path, settings: Settings) -> list[str]:
    """Peak RSS of decode + letterbox against ``decode_cost``, full size and size-aware."""
    from iweblens.inference.cost import decode_cost

    input_size = settings.input_size
    photo = read_photo(source)
    lines = [
        "| file | MiB full size | MiB size-aware | decode_cost MiB (size-aware) |",
        "| --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory(prefix="iweblens-bench-memory-") as folder:
        for name, width, height, progressive, sampling in MEMORY_CASES:
            large = cv2.resize(photo, (width, height), interpolation=cv2.INTER_CUBIC)
            target = Path(folder) / "case.jpg"
            options = [
                cv2.IMWRITE_JPEG_QUALITY,
                JPEG_QUALITY,
                cv2.IMWRITE_JPEG_PROGRESSIVE,
                int(progressive),
                cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420
                if sampling == 2
                else cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
            ]
            cv2.imwrite(str(target), large, options)
            del large
            header = read_header(target.read_bytes(), input_size)
            full, aware = peak_bytes(target, None), peak_bytes(target, input_size)
            lines.append(
                f"| {name} (1/{header.reduction}) | {full / 2**20:.1f} | {aware / 2**20:.1f} "
                f"| {decode_cost(header) / 2**20:.1f} |"
            )
    lines.append(
        "\nPeak RSS growth (VmHWM after clear_refs) over a warmed-up process, one per figure."
    )
    return lines
