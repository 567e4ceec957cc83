"""Every accepted image format and variant, written in code from a photograph.

The samples the cost model is measured on (``iweblens.bench.cost_model``) and the attacks of
``iweblens.bench.attacks.formats`` send: JPEG (baseline, progressive, 4:2:0 and 4:4:4, grey, CMYK,
arithmetic coding), MPO, PNG (8 and 16 bits, palette, interlaced, alpha), WebP, GIF, BMP, TIFF
(compressed, 16-bit, float) and AVIF (8, 10 and 12 bits, 4:2:0 and 4:4:4, alpha). Two encoders
come from Debian where present (``avifenc`` for 10/12-bit 4:4:4 AVIF, ``cjpeg`` for arithmetic
JPEG); their variants are left out without them.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from iweblens.bench.decoding import NOISE_SIGMA

MiB = 2**20
JPEG_QUALITY = 90
SMALL = (640, 480)
MIDDLE = (2000, 1500)
# A camera's 4:3 at the pixel limit, and the largest JPEG a header may declare (decoded at 1/8).
LIMIT = (4000, 3000)
JPEG_LIMIT = (8064, 6048)
WARM_SIZE = (64, 48)
NOISE_TILE = 509  # pixels: a prime, so the tile never lines up with a codec's blocks
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
