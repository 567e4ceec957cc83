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
import io
import multiprocessing
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import PIL
from PIL import Image

from iweblens.bench.decoding import NOISE_SIGMA, status_kib
from iweblens.config import Settings
from iweblens.detection import ImageDecodeError
from iweblens.inference.cost import decode_cost, work_units
from iweblens.inference.images import read_header

MiB = 2**20
JPEG_QUALITY = 90
SMALL = (640, 480)
MIDDLE = (2000, 1500)
# A camera's 4:3 at the pixel limit, and the largest JPEG a header may declare (decoded at 1/8).
LIMIT = (4000, 3000)
JPEG_LIMIT = (8064, 6048)
WARM_SIZE = (64, 48)
NOISE_TILE = 509  # pixels: a prime, so the tile never lines up with a codec's blocks
UNIT_ROUNDS = 7
REFUSED = "refused"
# libavif's encoder: the only writer of 10- and 12-bit 4:4:4 AVIF here (Debian: libavif-bin).
AVIFENC = shutil.which("avifenc")
# libjpeg-turbo's encoder: the only writer of arithmetic-coded JPEG here (Debian:
# libjpeg-turbo-progs); Pillow's libjpeg-turbo cannot even read one, OpenCV's does.
CJPEG = shutil.which("cjpeg")

# An encoder turns 8-bit RGB pixels (H x W x 3) into the bytes of one variant.
Encoder = Callable[[np.ndarray], bytes]


def _pillow(image: Image.Image, format: str, **options: Any) -> bytes:
    output = io.BytesIO()
    image.save(output, format, **options)
    return output.getvalue()


def _opencv(extension: str, pixels_bgr: np.ndarray, options: Sequence[int] = ()) -> bytes:
    ok, encoded = cv2.imencode(extension, pixels_bgr, list(options))
    if not ok:
        raise OSError(f"OpenCV cannot write {extension}")
    return bytes(encoded.tobytes())


def _deep(rgb: np.ndarray, dtype: type[np.generic]) -> np.ndarray:
    """8-bit RGB made BGR of 16 bits (the full range) or float32 in [0, 1], for OpenCV."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if dtype is np.uint16:
        return bgr.astype(np.uint16) * 257
    return bgr.astype(np.float32) / 255


def png_interlaced(rgb: np.ndarray) -> bytes:
    """An Adam7-interlaced 8-bit RGB PNG (no library here writes one): seven passes, filter 0."""
    height, width = rgb.shape[:2]
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
    raw = bytearray()
    for x0, y0, dx, dy in (*passes, (0, 1, 1, 2)):
        sub = rgb[y0::dy, x0::dx]
        if sub.size:
            rows = np.zeros((sub.shape[0], 1 + sub.shape[1] * 3), np.uint8)
            rows[:, 1:] = sub.reshape(sub.shape[0], -1)
            raw += rows.tobytes()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        body = kind + payload
        return len(payload).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes((8, 2, 0, 0, 1))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(bytes(raw), 6))
        + chunk(b"IEND", b"")
    )


def _mpo(rgb: np.ndarray) -> bytes:
    image = Image.fromarray(rgb)
    second = image.resize((max(1, image.width // 4), max(1, image.height // 4)))
    return _pillow(image, "MPO", quality=JPEG_QUALITY, save_all=True, append_images=[second])


def _jpeg(**options: Any) -> Encoder:
    return lambda rgb: _pillow(Image.fromarray(rgb), "JPEG", quality=JPEG_QUALITY, **options)


def _arithmetic(*options: str) -> Encoder:
    """An arithmetic-coded JPEG (4:2:0), written by ``cjpeg`` from a PPM on its input."""

    def cjpeg(rgb: np.ndarray) -> bytes:
        command = [CJPEG or "cjpeg", "-quality", str(JPEG_QUALITY), "-arithmetic", *options]
        ppm = _opencv(".ppm", np.ascontiguousarray(rgb[:, :, ::-1]))
        return subprocess.run(command, input=ppm, capture_output=True, check=True).stdout

    return cjpeg


def _gif(rgb: np.ndarray) -> bytes:
    return _pillow(Image.fromarray(rgb).quantize(256, Image.Quantize.FASTOCTREE), "GIF")


def _avif(depth: int, subsampling: str) -> Encoder:
    """AVIF: Pillow writes 8 bits in either subsampling, OpenCV 10 and 12 bits in 4:2:0, and
    libavif's own ``avifenc`` (where installed) 10 and 12 bits in 4:4:4."""
    if depth == 8:
        return lambda rgb: _pillow(
            Image.fromarray(rgb), "AVIF", quality=60, speed=10, subsampling=subsampling
        )
    if subsampling == "4:2:0":
        options = (cv2.IMWRITE_AVIF_DEPTH, depth, cv2.IMWRITE_AVIF_SPEED, 9)
        return lambda rgb: _opencv(".avif", _deep(rgb, np.uint16), options)

    def avifenc(rgb: np.ndarray) -> bytes:
        with tempfile.TemporaryDirectory(prefix="iweblens-avifenc-") as folder:
            source, target = Path(folder) / "in.png", Path(folder) / "out.avif"
            source.write_bytes(_opencv(".png", _deep(rgb, np.uint16)))
            command = [AVIFENC or "avifenc", "-d", str(depth), "-y", "444", "-s", "10"]
            subprocess.run([*command, str(source), str(target)], check=True, capture_output=True)
            return target.read_bytes()

    return avifenc


@dataclass(frozen=True)
class Variant:
    """One format and variant, and how to write it from 8-bit RGB pixels."""

    format: str
    name: str
    encode: Encoder
    limit: tuple[int, int] = LIMIT


VARIANTS = (
    Variant("JPEG", "baseline 4:2:0", _jpeg(subsampling=2), JPEG_LIMIT),
    Variant("JPEG", "baseline 4:4:4", _jpeg(subsampling=0), JPEG_LIMIT),
    Variant("JPEG", "progressive 4:2:0", _jpeg(subsampling=2, progressive=True), JPEG_LIMIT),
    Variant("JPEG", "progressive 4:4:4", _jpeg(subsampling=0, progressive=True), JPEG_LIMIT),
    Variant(
        "JPEG",
        "grey",
        lambda rgb: _pillow(Image.fromarray(rgb).convert("L"), "JPEG", quality=JPEG_QUALITY),
        JPEG_LIMIT,
    ),
    Variant(
        "JPEG",
        "CMYK",
        lambda rgb: _pillow(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=JPEG_QUALITY),
        JPEG_LIMIT,
    ),
    *(
        Variant("JPEG", name, _arithmetic(*options), JPEG_LIMIT)
        for name, options in (("arithmetic", ()), ("arithmetic progressive", ("-progressive",)))
        if CJPEG
    ),
    Variant("MPO", "two pictures", _mpo, JPEG_LIMIT),
    Variant("PNG", "8-bit RGB", lambda rgb: _pillow(Image.fromarray(rgb), "PNG")),
    Variant("PNG", "8-bit RGBA", lambda rgb: _pillow(Image.fromarray(rgb).convert("RGBA"), "PNG")),
    Variant("PNG", "16-bit RGB", lambda rgb: _opencv(".png", _deep(rgb, np.uint16))),
    Variant(
        "PNG",
        "16-bit RGBA",
        lambda rgb: _opencv(".png", cv2.cvtColor(_deep(rgb, np.uint16), cv2.COLOR_BGR2BGRA)),
    ),
    Variant(
        "PNG",
        "16-bit grey",
        lambda rgb: _opencv(".png", _deep(rgb, np.uint16)[:, :, 0].copy()),
    ),
    Variant(
        "PNG",
        "palette",
        lambda rgb: _pillow(Image.fromarray(rgb).quantize(256, Image.Quantize.FASTOCTREE), "PNG"),
    ),
    Variant("PNG", "interlaced", png_interlaced),
    Variant("WEBP", "lossy", lambda rgb: _pillow(Image.fromarray(rgb), "WEBP", quality=80)),
    Variant(
        "WEBP",
        "lossless",
        lambda rgb: _pillow(Image.fromarray(rgb), "WEBP", lossless=True, method=0),
    ),
    Variant(
        "WEBP",
        "lossy with alpha",
        lambda rgb: _pillow(Image.fromarray(rgb).convert("RGBA"), "WEBP", quality=80),
    ),
    Variant("GIF", "palette", _gif),
    Variant("BMP", "24-bit", lambda rgb: _pillow(Image.fromarray(rgb), "BMP")),
    Variant("TIFF", "8-bit", lambda rgb: _pillow(Image.fromarray(rgb), "TIFF")),
    Variant(
        "TIFF",
        "8-bit LZW",
        lambda rgb: _pillow(Image.fromarray(rgb), "TIFF", compression="tiff_lzw"),
    ),
    Variant(
        "TIFF",
        "8-bit deflate",
        lambda rgb: _pillow(Image.fromarray(rgb), "TIFF", compression="tiff_adobe_deflate"),
    ),
    Variant(
        "TIFF",
        "8-bit JPEG",
        lambda rgb: _pillow(Image.fromarray(rgb), "TIFF", compression="jpeg", quality=90),
    ),
    Variant(
        "TIFF",
        "8-bit RGBA",
        lambda rgb: _pillow(Image.fromarray(rgb).convert("RGBA"), "TIFF"),
    ),
    Variant("TIFF", "16-bit", lambda rgb: _opencv(".tiff", _deep(rgb, np.uint16))),
    Variant("TIFF", "float32", lambda rgb: _opencv(".tiff", _deep(rgb, np.float32))),
    Variant(
        "TIFF",
        "float32 grey",
        lambda rgb: _pillow(Image.fromarray(_deep(rgb, np.float32)[:, :, 0].copy()), "TIFF"),
    ),
    Variant("AVIF", "8-bit 4:2:0", _avif(8, "4:2:0")),
    Variant("AVIF", "8-bit 4:4:4", _avif(8, "4:4:4")),
    Variant(
        "AVIF",
        "8-bit 4:2:0 with alpha",
        lambda rgb: _pillow(Image.fromarray(rgb).convert("RGBA"), "AVIF", quality=60, speed=10),
    ),
    Variant("AVIF", "10-bit 4:2:0", _avif(10, "4:2:0")),
    Variant("AVIF", "12-bit 4:2:0", _avif(12, "4:2:0")),
    *(
        Variant("AVIF", f"{depth}-bit 4:4:4", _avif(depth, "4:4:4"))
        for depth in (10, 12)
        if AVIFENC
    ),
)


def sizes(variant: Variant) -> tuple[tuple[int, int], ...]:
    """Small, about 3 MP, the pixel limit, and for JPEGs the declared limit (decoded at 1/8)."""
    limits = (LIMIT,) if variant.limit == LIMIT else (LIMIT, variant.limit)
    return (SMALL, MIDDLE, *limits)


def photo_pixels(photo: Path, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """8-bit RGB of ``photo`` resized to ``size`` (width, height), with a camera's noise.

    The noise is one tile repeated (a fresh draw per pixel costs more than the measurement at
    48 MP); its period is far beyond what any of these codecs can predict from.
    """
    with Image.open(photo) as source:
        rgb = np.asarray(source.convert("RGB"))
    large = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)
    tile = np.random.default_rng(seed).normal(0.0, NOISE_SIGMA, (NOISE_TILE, NOISE_TILE, 3))
    noise = tile.astype(np.int16)
    reps = (-(-size[1] // NOISE_TILE), -(-size[0] // NOISE_TILE), 1)
    noisy = large + np.tile(noise, reps)[: size[1], : size[0]]
    clipped: np.ndarray = np.clip(noisy, 0, 255).astype(np.uint8)
    return clipped


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
    paths = ModelStore(settings.model_dir, progress=False).verified_paths()
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
        "Generated by `iweblens bench-decode cost` (`src/iweblens/bench/cost_model.py`); the model "
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
