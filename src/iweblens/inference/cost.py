"""The cost model of admission: the memory and time an image will take, from its header alone.

Admission reserves ``decode_cost`` bytes while a request's job runs and queues it by its
``work_units``; the header check refuses an image whose cost exceeds ``cost_limit``, what an image
of its format at the pixel limit costs. Every constant is measured per format, as the largest
over the format's variants (bit depths, alpha, palettes, compressions, chroma subsamplings), by
``iweblens bench-decode cost``, which writes the table of ``docs/cost-model.md``:
decode + letterbox in a fresh process per sample, predicted beside measured.

A format's variants share one constant: the header need not be read deeper than its size, and a
variant the table has not seen still lands under its format's costliest one.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from iweblens.inference.images import ImageHeader, ImageLimits

MiB = 1024 * 1024

# Peak bytes a decoded pixel costs while decoding, by format (Pillow's names): the decoder's
# output and its copies, plus the format's own buffers where it has any (a lossless WebP's ARGB,
# the RGB a GIF's palette is turned into, the strips libtiff reads, float samples that only
# Pillow decodes). The costliest variant of each format sets its figure.
DECODE_BYTES_PER_PIXEL = {
    "JPEG": 6.0,
    "MPO": 6.0,
    "PNG": 6.0,
    "BMP": 6.0,
    "WEBP": 9.5,
    "GIF": 9.0,
    "TIFF": 16.0,
}
# An AVIF's cost follows its AV1 stream: the AV1 decoder's frames and libavif's YUV planes scale
# with the colour samples a pixel and their width (2 bytes above 8 bits), and a deep stream is
# converted through 16-bit RGB besides the 8-bit output.
AVIF_BYTES_PER_PIXEL = 17.0
AVIF_PLANE_BYTES_PER_SAMPLE = 1.5
AVIF_DEEP_BYTES_PER_PIXEL = 2.0
# A progressive JPEG keeps every DCT coefficient of the full-size image, 2 bytes a colour sample,
# whatever the scale it is decoded at.
COEFFICIENT_BYTES = 2
# Letterboxing: the output, plus four float32 RGB temporaries per source row and network column
# (the NumPy letterbox, where the C extension is not built).
OUTPUT_BYTES_PER_PIXEL = 3
LETTERBOX_BYTES_PER_ROW_COLUMN = 48
DECODE_FIXED_BYTES = 4 * MiB

# Process CPU of decode + letterbox in work units (1 unit: the inference of one 640x480
# photograph, decode + letterbox + forward), per million pixels, set from the fastest unit seen
# (the forward pass is what differs most between CPUs). A JPEG's entropy decoding covers every
# declared pixel whatever the scale decoded (a progressive one several times, an arithmetic-coded
# one more slowly), so JPEGs are charged per declared pixel; every other format decodes each pixel
# it declares.
UNITS_PER_MEGAPIXEL = {
    "JPEG": 0.2,
    "MPO": 0.2,
    "PNG": 1.2,
    "BMP": 0.2,
    "WEBP": 0.8,
    "GIF": 1.5,
    "TIFF": 1.0,
    "AVIF": 1.5,
}
PROGRESSIVE_UNITS_PER_MEGAPIXEL = 0.5
ARITHMETIC_UNITS_PER_MEGAPIXEL = 0.5
# Every image's fixed share: reading the header, the letterbox's pass over the network input.
FIXED_UNITS = 0.15


def decode_cost(header: ImageHeader) -> int:
    """Peak bytes needed, beyond the encoded image, to decode, orient and letterbox this image.

    From the header alone, following its decode plan (reduction, orientation, progressive): the
    larger of the decoding phase (the decoded pixels at the format's bytes a pixel, a progressive
    JPEG's full-size coefficient buffers) and the letterbox phase (the decoded pixels and the
    resize's temporaries for the header's network input), plus a fixed allowance. Raises
    ``KeyError`` for a format the service does not decode.
    """
    width, height = header.decoded_size
    decoded = width * height
    decoding = int(decoded * _bytes_per_pixel(header))
    if header.progressive:
        samples = header.width * header.height * header.samples_per_pixel
        decoding += int(samples * COEFFICIENT_BYTES)
    if header.orientation >= 5:
        width, height = height, width
    # The letterbox reads every displayed row for each network column of the resized image.
    size = header.input_size
    columns = size if width >= height else max(width * size // height, 1)
    letterboxing = decoded * OUTPUT_BYTES_PER_PIXEL
    letterboxing += height * columns * LETTERBOX_BYTES_PER_ROW_COLUMN
    return DECODE_FIXED_BYTES + max(decoding, letterboxing)


def _bytes_per_pixel(header: ImageHeader) -> float:
    if header.format != "AVIF":
        return DECODE_BYTES_PER_PIXEL[header.format]
    sample_bytes = 1 if header.bits_per_sample <= 8 else 2
    planes = AVIF_PLANE_BYTES_PER_SAMPLE * sample_bytes * header.samples_per_pixel
    deep = AVIF_DEEP_BYTES_PER_PIXEL if header.bits_per_sample > 8 else 0.0
    return AVIF_BYTES_PER_PIXEL + planes + deep


def cost_limit(header: ImageHeader, limits: ImageLimits) -> int:
    """Bytes an image of ``header``'s format may need: a square of at least ``limits.max_pixels``
    in that format (the costliest shape), decoded at full size: the pixel limit, in memory. Only
    a JPEG decoded at reduced size can exceed it: a progressive one, whose coefficients are full
    size."""
    side = math.isqrt(limits.max_pixels - 1) + 1
    square = dataclasses.replace(
        header,
        width=side,
        height=side,
        orientation=1,
        reduction=1,
        progressive=False,
        input_size=limits.input_size,
    )
    return decode_cost(square)


def work_units(header: ImageHeader) -> float:
    """Time this image takes, in units of one 640x480 photograph's inference (for queue waits).

    ``(work_units - 1)`` units bound the process CPU of its decode + letterbox (the measured
    table: ``docs/cost-model.md``). Raises ``KeyError`` for a format the service does not decode.
    """
    megapixels = header.width * header.height / 1e6
    rate = UNITS_PER_MEGAPIXEL[header.format]
    if header.progressive:
        rate += PROGRESSIVE_UNITS_PER_MEGAPIXEL
    if header.arithmetic:
        rate += ARITHMETIC_UNITS_PER_MEGAPIXEL
    return 1.0 + FIXED_UNITS + megapixels * rate
