"""The cost model against real decodes: every accepted format and variant, measured in a fresh
process (peak resident growth, process CPU of decode + letterbox), must sit at or below what
``decode_cost`` and ``work_units`` predict. A decoder update that makes a format hungrier fails
here; ``iweblens bench-decode cost`` runs the full table (``docs/cost-model.md``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iweblens.bench import cost_model, variants
from iweblens.bench.cost_model import Row
from iweblens.bench.variants import LIMIT, MIDDLE, SMALL, VARIANTS, Variant
from iweblens.config import Settings
from iweblens.inference.cost import cost_limit, decode_cost, work_units
from iweblens.inference.images import (
    ImageHeader,
    ImageLimits,
    ImageTooLargeError,
    inspect_image,
    read_header,
)

MiB = 2**20
# Refused by the header reader (Pillow opens no RGB float TIFF): 400 without decoding.
REFUSED_VARIANTS = {("TIFF", "float32")}


@pytest.fixture(scope="module")
def photo(photos: list[Path]) -> Path:
    return photos[0]


@pytest.fixture(scope="module")
def unit_s(photo: Path) -> float:
    """Seconds of one work unit, measured in this run as the table measures it."""
    return cost_model.unit_seconds(photo, Settings())


def check(row: Row, unit_s: float) -> None:
    name = f"{row.variant.format} {row.variant.name} {row.size[0]}x{row.size[1]}"
    if (row.variant.format, row.variant.name) in REFUSED_VARIANTS:
        assert row.measured.error is not None, name
        return
    assert row.measured.error is None, f"{name}: {row.measured.error}"
    assert row.measured.peak_bytes <= row.predicted_bytes, (
        f"{name}: peak {row.measured.peak_bytes / MiB:.1f} MiB, "
        f"predicted {row.predicted_bytes / MiB:.1f} MiB"
    )
    assert row.measured.cpu_s <= row.predicted_cpu_s(unit_s), (
        f"{name}: {row.measured.cpu_s * 1000:.0f} ms of CPU, "
        f"predicted {row.predicted_cpu_s(unit_s) * 1000:.0f} ms"
    )


@pytest.mark.parametrize("size", [SMALL, MIDDLE], ids=["640x480", "2000x1500"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: f"{v.format} {v.name}")
def test_every_variant_costs_at_most_its_prediction(
    variant: Variant, size: tuple[int, int], photo: Path, unit_s: float
) -> None:
    check(cost_model.sample(variant, size, photo, Settings()), unit_s)


@pytest.mark.parametrize(
    "name", ["8-bit 4:2:0", "12-bit 4:2:0"], ids=["8-bit 4:2:0", "12-bit 4:2:0"]
)
def test_an_avif_at_the_pixel_limit_costs_at_most_its_prediction(
    name: str, photo: Path, unit_s: float
) -> None:
    """The fault: a 4000 x 3000 AVIF was costed as a PNG, a third of its decoder's real peak."""
    variant = next(v for v in VARIANTS if v.format == "AVIF" and v.name == name)
    row = cost_model.sample(variant, LIMIT, photo, Settings())
    check(row, unit_s)
    assert row.predicted_bytes > 150 * MiB


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    variant=st.sampled_from([v for v in VARIANTS if (v.format, v.name) not in REFUSED_VARIANTS]),
    width=st.integers(1, 1200),
    height=st.integers(1, 1200),
)
def test_fuzzed_sizes_cost_at_most_their_prediction(
    variant: Variant, width: int, height: int, photo: Path, unit_s: float
) -> None:
    """Random variants at random sizes (1 pixel to 1.4 MP, any aspect): whatever decodes stays
    under its predicted memory and CPU (an encoder may refuse a size: then nothing is asserted
    of it, as the service never sees such a file)."""
    try:
        row = cost_model.sample(variant, (width, height), photo, Settings())
    except (OSError, ValueError):
        return
    check(row, unit_s)


def test_avif_headers_carry_their_av1_layout(photo: Path) -> None:
    pixels = variants.photo_pixels(photo, (64, 48))
    layouts = {}
    for variant in VARIANTS:
        if variant.format == "AVIF":
            header = read_header(variant.encode(pixels))
            layouts[variant.name] = (header.bits_per_sample, header.samples_per_pixel)
    assert layouts["8-bit 4:2:0"] == (8, 1.5)
    assert layouts["8-bit 4:4:4"] == (8, 3.0)
    assert layouts["12-bit 4:2:0"] == (12, 1.5)
    # Its alpha item is monochrome: the colour item still sets the layout.
    assert layouts["8-bit 4:2:0 with alpha"] == (8, 1.5)


@pytest.mark.skipif(variants.CJPEG is None, reason="no cjpeg (Debian: libjpeg-turbo-progs)")
def test_arithmetic_coded_jpegs_are_marked_and_charged_more(photo: Path) -> None:
    pixels = variants.photo_pixels(photo, (64, 48))
    kinds = {v.name: read_header(v.encode(pixels)) for v in VARIANTS if v.format == "JPEG"}
    assert kinds["arithmetic"].arithmetic and kinds["arithmetic progressive"].arithmetic
    assert not kinds["baseline 4:2:0"].arithmetic and not kinds["progressive 4:2:0"].arithmetic
    assert kinds["arithmetic progressive"].progressive
    huffman = dataclasses.replace(kinds["baseline 4:2:0"], width=4000, height=3000)
    assert work_units(dataclasses.replace(huffman, arithmetic=True)) > work_units(huffman)


def test_the_header_check_bounds_cost_by_the_pixel_limit_of_each_format() -> None:
    """An image at the pixel limit passes the header check in every format (the pod's capacity
    decides: ``run_detection`` answers 413 beyond it); only a reduced JPEG can cost more."""
    limits = ImageLimits()
    for format in sorted({v.format for v in VARIANTS}):
        header = ImageHeader(format, 4000, 3000, bits_per_sample=12)
        assert decode_cost(header) <= cost_limit(header, limits), format
    progressive = ImageHeader("JPEG", 8064, 6048, reduction=8, progressive=True)
    assert decode_cost(progressive) > cost_limit(progressive, limits)


def test_a_twelve_megapixel_avif_passes_the_header_check_at_its_real_cost(photo: Path) -> None:
    avif = next(v for v in VARIANTS if v.format == "AVIF" and v.name == "8-bit 4:2:0")
    data = avif.encode(variants.photo_pixels(photo, LIMIT))
    header = inspect_image(data, ImageLimits())
    assert header.decoded_size == LIMIT
    assert decode_cost(header) > 150 * MiB
    with pytest.raises(ImageTooLargeError):
        inspect_image(data, ImageLimits(max_pixels=4_000_000))


def test_work_units_grow_with_the_pixels_a_decoder_reads() -> None:
    small = work_units(ImageHeader("JPEG", 640, 480))
    assert 1 < small < 1.3
    reduced = ImageHeader("JPEG", 8064, 6048, reduction=8)
    progressive = dataclasses.replace(reduced, progressive=True)
    assert (
        work_units(progressive) > work_units(reduced) > work_units(ImageHeader("JPEG", 4000, 3000))
    )
    assert work_units(ImageHeader("AVIF", 4000, 3000)) > work_units(ImageHeader("BMP", 4000, 3000))
