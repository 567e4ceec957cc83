"""The header reader, fuzzed: only the ``ImageDecodeError`` family escapes, plans hold.

Seeds are a committed photograph in the formats the header reader walks (JPEG baseline and
progressive, PNG, AVIF), and files built by ``iweblens.bench.attacks.images`` (lossless SOF3,
HEIF and AVIF ftyp boxes, a scan-flooded JPEG); each example patches bytes, words and lengths,
cuts and repeats slices. ``FUZZ_EXAMPLES`` is the knob of the service's fuzz tests.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support import encoded, heic_header

from iweblens.bench.attacks.images import lossless_jpeg, progressive_jpeg, scan_flood
from iweblens.detection import ImageDecodeError
from iweblens.inference.images import ImageLimits, inspect_image
from iweblens.inference.pixels import decode_image

# One knob with the service fuzz tests; a header check costs a tenth of a request or less.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150")) * 12


def seeds(photo: Path) -> list[bytes]:
    with Image.open(photo) as image:
        small = image.convert("RGB").resize((96, 72))
    return [
        encoded(small, "JPEG", quality=85),
        encoded(small, "JPEG", quality=85, progressive=True),
        encoded(small, "JPEG", quality=85, progressive=True, subsampling="4:4:4"),
        encoded(small.convert("L"), "JPEG", progressive=True),
        encoded(small, "PNG"),
        encoded(small.convert("P"), "PNG"),
        encoded(small, "AVIF", quality=60),
        lossless_jpeg(40, 30),
        heic_header(),
        heic_header(b"avif", (b"mif1",)),
        scan_flood(progressive_jpeg(48, 32), 20),
    ]


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(corpus)))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["byte", "word", "long", "cut", "copy"]))
        if kind == "byte":
            data[position] = draw(st.integers(0, 255))
        elif kind == "word" and position + 2 <= len(data):
            struct.pack_into(">H", data, position, draw(st.integers(0, 0xFFFF)))
        elif kind == "long" and position + 4 <= len(data):
            struct.pack_into(">I", data, position, draw(st.integers(0, 0xFFFFFFFF)))
        elif kind == "cut":
            data = data[: max(position, 1)]
        elif kind == "copy":
            end = draw(st.integers(position, min(len(data), position + 64)))
            data[position:position] = data[position:end] * draw(st.integers(1, 40))
    return bytes(data)


def test_fuzzed_headers_raise_only_decode_errors_and_keep_their_plan(photos: list[Path]) -> None:
    """No exception but the ``ImageDecodeError`` family; what decodes has the planned size."""
    limits = ImageLimits()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(mutated(seeds(photos[0])))
    def check(data: bytes) -> None:
        try:
            header = inspect_image(data, limits)
            pixels = decode_image(data, limits.input_size).pixels
        except ImageDecodeError:
            return
        width, height = header.decoded_size
        if header.orientation >= 5:
            width, height = height, width
        assert pixels.shape[:2] == (height, width)
        assert width * height <= limits.max_pixels

    check()
