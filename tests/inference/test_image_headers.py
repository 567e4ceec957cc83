"""The header reader refuses what it cannot bound: each refusal is checked against the decoders.

Hostile files come from ``iweblens.bench.attacks.images`` (built in code); ordinary ones are the
committed photographs, re-encoded. ``test_image_headers_fuzz.py`` fuzzes the same reader.
"""

from __future__ import annotations

import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import encoded, heic_header

from iweblens.bench.attacks.images import (
    LOSSLESS_SIZE,
    avif_without_primary_item,
    flood_jpeg,
    ftyp_body,
    jpeg_sampling,
    lossless_jpeg,
    png_chunk,
    png_declaring_chunk,
    progressive_jpeg,
    scan_flood,
)
from iweblens.detection import ImageDecodeError
from iweblens.inference.headers import PNG_SIGNATURE, iso_brands, png_chunks, walk_jpeg
from iweblens.inference.images import (
    MAX_PNG_ANCILLARY_CHUNKS,
    MAX_PNG_CHUNKS,
    MAX_SCAN_MCUS,
    MAX_SCANS,
    MAX_SEGMENTS,
    REDUCTIONS,
    ImageLimits,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    inspect_image,
    read_header,
)
from iweblens.inference.pixels import decode_image, decode_with_opencv, decode_with_pillow


@pytest.fixture(scope="module")
def photo(photos: list[Path]) -> Image.Image:
    with Image.open(photos[0]) as image:
        return image.convert("RGB")


def refused_as_damaged(data: bytes) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as raised:
        read_header(data)
    assert not isinstance(raised.value, (ImageTooLargeError, UnsupportedImageFormatError))
    return raised.value


# ----------------------------------------------------------------------------- PNG chunk lengths


@pytest.mark.parametrize("declared", [256 * 2**20, 0xFFFFFFF0, 9])
def test_a_png_chunk_declaring_more_than_the_file_holds_is_refused(declared: int) -> None:
    data = png_declaring_chunk(declared)
    assert len(data) == 53
    assert "IDAT" in str(refused_as_damaged(data))


def test_the_png_chunk_line_is_where_the_decoders_fail(photo: Image.Image) -> None:
    """One byte more than present in the last IDAT: OpenCV cannot decode it either.

    (Pillow can: it stops reading once the compressed stream ends.)
    """
    data = encoded(photo, "PNG")
    iend = data.rindex(b"IEND") - 4
    idat = data.rindex(b"IDAT", 0, iend) - 4
    (length,) = struct.unpack_from(">I", data, idat)
    assert idat + 12 + length == iend
    longer = data[:idat] + struct.pack(">I", length + 13) + data[idat + 4 :]
    assert decode_with_opencv(data) is not None and decode_with_opencv(longer) is None
    refused_as_damaged(longer)
    header = read_header(data)
    assert (header.width, header.height, header.scans, header.lossless) == (*photo.size, 1, False)


def test_png_walk_reads_every_chunk_up_to_iend(photo: Image.Image) -> None:
    data = encoded(photo, "PNG") + png_chunk(b"tEXt", b"after the end")
    kinds = [kind for kind, _ in png_chunks(data)]
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"tEXt" not in kinds


def rechunked(png: bytes, size: int, extra: bytes = b"") -> bytes:
    """``png`` with its image data split into IDAT chunks of ``size`` bytes, ``extra`` before."""
    chunks = list(png_chunks(png))
    data = b"".join(bytes(payload) for kind, payload in chunks if kind == b"IDAT")
    idats = [png_chunk(b"IDAT", data[i : i + size]) for i in range(0, len(data), size)]
    before = [png_chunk(kind, bytes(p)) for kind, p in chunks if kind not in (b"IDAT", b"IEND")]
    return PNG_SIGNATURE + b"".join(before) + extra + b"".join(idats) + png_chunk(b"IEND", b"")


def test_png_chunk_counts_are_bounded_where_real_encoders_stay(photo: Image.Image) -> None:
    png = encoded(photo, "PNG")
    split = rechunked(png, 1024)
    assert np.array_equal(decode_with_opencv(split), decode_with_opencv(png))
    assert read_header(split).width == photo.width
    ancillary = sum(kind[0] & 0x20 != 0 for kind, _ in png_chunks(png))  # lower-case first
    room = MAX_PNG_ANCILLARY_CHUNKS - ancillary
    private = png_chunk(b"prVt", b"")
    assert len(png) // 4 > MAX_PNG_CHUNKS
    assert read_header(rechunked(png, 1024, private * room)).width == photo.width
    for flood in (
        rechunked(png, 1024, private * (room + 1)),
        rechunked(png, 4),
    ):
        with pytest.raises(ImageTooLargeError, match="chunks"):
            read_header(flood)


# ----------------------------------------------------------------------------- lossless JPEG


def test_libjpeg_decodes_a_lossless_jpeg_at_full_size_whatever_the_scale_asked() -> None:
    data = lossless_jpeg(64, 48)
    for reduction in (1, *REDUCTIONS):
        pixels = decode_with_opencv(data, reduction)
        assert pixels is not None and pixels.shape == (48, 64, 3), reduction
        assert (pixels == 128).all()


def test_a_large_lossless_jpeg_is_planned_at_full_size_and_refused() -> None:
    data = lossless_jpeg(*LOSSLESS_SIZE)
    header = read_header(data, 416)
    assert header.lossless and header.reduction == 1 and header.scans == 1
    with pytest.raises(ImageTooLargeError, match="12000000 pixels"):
        inspect_image(data, ImageLimits())
    assert decode_image(lossless_jpeg(2000, 1500), 416).pixels.shape == (1500, 2000, 3)


@pytest.mark.parametrize("marker", [0xC3, 0xC7, 0xCB, 0xCF])
def test_every_lossless_frame_type_is_planned_at_full_size(marker: int) -> None:
    header = read_header(lossless_jpeg(3000, 2000, marker=marker), 416)
    assert header.lossless and header.reduction == 1


def test_baseline_and_progressive_photos_are_not_lossless(photo: Image.Image) -> None:
    large = photo.resize((2560, 1920))
    baseline = read_header(encoded(large, "JPEG"), 416)
    progressive = read_header(encoded(large, "JPEG", progressive=True), 416)
    assert (baseline.lossless, baseline.scans, baseline.reduction) == (False, 1, 2)
    assert (progressive.lossless, progressive.scans, progressive.reduction) == (False, 10, 2)


# ----------------------------------------------------------------------------- progressive scans


def test_the_15000_scan_jpeg_is_refused_and_the_decoder_would_decode_it(photos: list[Path]) -> None:
    data = flood_jpeg(photos[0])
    with pytest.raises(ImageTooLargeError, match=f"more than {MAX_SCANS} scans"):
        read_header(data, 416)
    # libjpeg only warns of the bogus progression: every empty scan would be decoded.
    few = scan_flood(progressive_jpeg(64, 48), MAX_SCANS)
    pixels = decode_with_opencv(few)
    assert pixels is not None and pixels.shape == (48, 64, 3)


def declaring(data: bytes, width: int, height: int) -> bytes:
    """``data`` (a JPEG) with its frame header patched to declare ``width`` x ``height``."""
    patched = bytearray(data)
    sof = next(patched.find(m) for m in (b"\xff\xc2", b"\xff\xc0") if patched.find(m) > 0)
    struct.pack_into(">HH", patched, sof + 5, height, width)
    return bytes(patched)


def test_scan_work_is_bounded_as_scans_times_mcus() -> None:
    """A 12 MP 4:2:0 frame has 250 x 188 MCUs: 170 scans fit the bound, 171 do not."""
    base = declaring(progressive_jpeg(64, 48), 4000, 3000)
    walk = walk_jpeg(base, MAX_SCANS, MAX_SEGMENTS)
    assert walk.frame is not None and walk.frame.mcus == 250 * 188
    fits = MAX_SCAN_MCUS // (250 * 188)
    assert read_header(scan_flood(base, fits - 10), 416).scans == fits
    with pytest.raises(ImageTooLargeError, match="scans x MCUs"):
        read_header(scan_flood(base, fits - 9), 416)
    small = progressive_jpeg(640, 480)
    assert read_header(scan_flood(small, MAX_SCANS - 10)).scans == MAX_SCANS


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
def test_libjpeg_progressive_files_pass_at_the_largest_declared_size(subsampling: str) -> None:
    side = int(ImageLimits().max_declared_pixels ** 0.5)
    data = declaring(progressive_jpeg(64, 48, subsampling=subsampling), side, side)
    assert read_header(data).scans == 10


def test_every_photograph_progressive_is_admitted(coco128: list[Path]) -> None:
    for path in coco128:
        with Image.open(path) as image:
            data = encoded(image.convert("RGB"), "JPEG", quality=90, progressive=True)
        assert inspect_image(data, ImageLimits()).scans == 10, path.name


def test_a_flood_of_marker_segments_is_refused_before_pillow_walks_it(photo: Image.Image) -> None:
    data = encoded(photo, "JPEG")
    comments = b"\xff\xfe\x00\x02" * MAX_SEGMENTS  # empty COM segments, before the frame
    with pytest.raises(ImageTooLargeError, match="marker segments"):
        read_header(data[:2] + comments + data[2:])
    assert read_header(data[:2] + comments[: -4 * 32] + data[2:]).width == photo.width


# ----------------------------------------------------------------------------- frame headers


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("factors", [(0x00, 0x00, 0x00), (0x00, 0x11, 0x11), (0x51, 0x11, 0x11)])
def test_sampling_factors_libjpeg_refuses_are_refused(
    factors: tuple[int, ...], progressive: bool
) -> None:
    data = jpeg_sampling(factors, progressive)
    assert decode_with_opencv(data) is None and decode_with_pillow(data) is None
    assert "sampling factor" in str(refused_as_damaged(data))


def test_a_second_frame_header_is_refused_as_libjpeg_refuses_it(photo: Image.Image) -> None:
    data = encoded(photo, "JPEG")
    sof = data.index(b"\xff\xc0")
    (length,) = struct.unpack_from(">H", data, sof + 2)
    frame = bytearray(data[sof : sof + 2 + length])
    struct.pack_into(">HH", frame, 5, 8000, 6000)  # Pillow would plan by this one
    doubled = data[: sof + 2 + length] + bytes(frame) + data[sof + 2 + length :]
    assert decode_with_opencv(doubled) is None
    assert "two frame headers" in str(refused_as_damaged(doubled))


# ----------------------------------------------------------------------------- ISO base media


def test_a_16_mib_ftyp_body_is_read_in_little_memory() -> None:
    data = ftyp_body()
    assert len(data) == 16 * 2**20
    tracemalloc.start()
    try:
        with pytest.raises(UnsupportedImageFormatError):
            read_header(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < len(data) // 4, peak  # no copy, no list of its slices


def avif(photo: Image.Image) -> bytes:
    return encoded(photo.resize((64, 48)), "AVIF", quality=80)


def test_an_avif_whose_primary_item_is_missing_is_damaged(photos: list[Path]) -> None:
    missing = avif_without_primary_item(photos[0])
    assert decode_with_opencv(missing) is None and decode_with_pillow(missing) is None
    refused_as_damaged(missing)


def test_a_damaged_avif_is_damaged_not_heic(photo: Image.Image) -> None:
    data = avif(photo)
    assert b"avif" in iso_brands(data) and b"mif1" in iso_brands(data)
    for damaged in (data[: len(data) // 2], data[:32], data.replace(b"iinf", b"xxxx")):
        assert "AVIF" in str(refused_as_damaged(damaged))
    assert read_header(data).format == "AVIF"
    with pytest.raises(UnsupportedImageFormatError):
        read_header(heic_header(b"mif1", (b"heic",)))
