"""Image inputs: every accepted format, every orientation, truncated files, size-aware decoding.

Every variant is made here from a committed photograph (elephants and a person), and judged by the
real model against the upright photograph's detections: lossless variants must find the same
labels with box IoU >= 0.9, lossy re-encodes must agree at F1 >= 0.9 (issue 13).
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from support import heic_header, png_declaring

from iweblens.bench.agreement import F1Tally, iou
from iweblens.detection import Detection, ImageDecodeError
from iweblens.inference.cost import decode_cost
from iweblens.inference.detector import Detector
from iweblens.inference.engines import create_engine
from iweblens.inference.images import (
    SUPPORTED_NAMES,
    ImageHeader,
    ImageLimits,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    inspect_image,
    read_header,
    reduction_for,
)
from iweblens.inference.pixels import decode_image, decode_with_opencv, decode_with_pillow, orient
from iweblens.models.store import ModelPaths

PHOTO = "000000012807.jpg"
ORIENTATIONS = range(1, 9)
# The stored pixels of orientation v are the upright picture turned by v's inverse.
INVERSE = {6: 8, 8: 6}
PATHS = {
    "opencv": (decode_with_opencv,),
    "pillow": (decode_with_pillow,),
}


@pytest.fixture(scope="module")
def detector(model_paths: ModelPaths) -> Detector:
    return Detector(create_engine("opencv", model_paths), model_paths.labels())


@pytest.fixture(scope="module")
def upright(photos: list[Path]) -> np.ndarray:
    return cv2.imread(str(next(p for p in photos if p.name == PHOTO)))


def encode(pixels: np.ndarray, fmt: str, orientation: int = 1, **options: object) -> bytes:
    """Encode BGR ``pixels`` with Pillow, tagging ``orientation`` where the format carries one."""
    image = Image.fromarray(np.ascontiguousarray(pixels[:, :, ::-1]))
    if orientation != 1:
        if fmt == "TIFF":
            options["tiffinfo"] = {0x0112: orientation}  # TIFF's own orientation tag
        else:
            exif = Image.Exif()
            exif[0x0112] = orientation  # AVIF: Pillow writes it as irot/imir properties
            options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def assert_same_objects(expected: list[Detection], found: list[Detection]) -> None:
    """Lossless: the same labels, and every box paired with one of IoU >= 0.9."""
    assert sorted(d.label for d in found) == sorted(d.label for d in expected)
    for want in expected:
        assert max(iou(want, got) for got in found if got.label == want.label) >= 0.9, want


def f1(expected: list[Detection], found: list[Detection]) -> float:
    tally = F1Tally()
    tally.add(expected, found)
    return tally.f1


# Formats that can store an orientation, as (name, Pillow format, options, lossless).
ORIENTED_FORMATS = [
    ("jpeg", "JPEG", {"quality": 95}, False),
    ("progressive-jpeg", "JPEG", {"quality": 95, "progressive": True}, False),
    ("png", "PNG", {}, True),
    ("webp-lossless", "WEBP", {"lossless": True}, True),
    ("webp-lossy", "WEBP", {"quality": 95}, False),
    ("tiff", "TIFF", {}, True),
    ("tiff-lzw", "TIFF", {"compression": "tiff_lzw"}, True),
    ("avif", "AVIF", {"quality": 95}, False),
]


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize(
    ("fmt", "options", "lossless"),
    [case[1:] for case in ORIENTED_FORMATS],
    ids=[case[0] for case in ORIENTED_FORMATS],
)
def test_every_orientation_gives_the_upright_photos_objects(
    detector: Detector,
    upright: np.ndarray,
    fmt: str,
    options: dict,
    lossless: bool,
    path: str,
) -> None:
    expected = detector.detect(upright)
    assert {"elephant", "person"} <= {d.label for d in expected}
    for orientation in ORIENTATIONS:
        stored = orient(upright, INVERSE.get(orientation, orientation))
        data = encode(stored, fmt, orientation, **options)
        assert read_header(data).orientation == orientation
        image = decode_image(data, 416, decoders=PATHS[path])
        assert (image.width, image.height) == (upright.shape[1], upright.shape[0])
        found = detector.detect(image.pixels, size=(image.width, image.height))
        if lossless:
            assert np.array_equal(image.pixels, upright), orientation
            assert_same_objects(expected, found)
        else:
            assert f1(expected, found) >= 0.9, (orientation, expected, found)


@pytest.mark.parametrize("path", sorted(PATHS))
def test_reduced_jpeg_decode_keeps_every_orientation(
    detector: Detector, upright: np.ndarray, path: str
) -> None:
    """A 1920x1440 JPEG is decoded at 1/2; boxes still come back in its displayed pixels."""
    large = cv2.resize(upright, (1920, 1440), interpolation=cv2.INTER_CUBIC)
    expected = detector.detect_bytes(encode(large, "JPEG", quality=92))
    for orientation in ORIENTATIONS:
        stored = orient(large, INVERSE.get(orientation, orientation))
        data = encode(stored, "JPEG", orientation, quality=92)
        header = read_header(data, 416)
        assert header.reduction == 2
        image = decode_image(data, 416, decoders=PATHS[path])
        assert image.pixels.shape[:2] == (720, 960)
        assert (image.width, image.height) == (1920, 1440)
        found = detector.detect(image.pixels, size=(image.width, image.height))
        assert f1(expected, found) >= 0.9, (orientation, expected, found)


def test_both_paths_agree_on_an_oriented_tiff_whatever_the_libraries_do(
    upright: np.ndarray,
) -> None:
    """Pillow >= 11 and OpenCV rotate TIFFs themselves; the result must not be turned twice."""
    data = encode(orient(upright, 8), "TIFF", 6)
    header = read_header(data)
    assert (header.width, header.height, header.displayed_size) == (480, 640, (640, 480))
    for decoders in PATHS.values():
        assert np.array_equal(decode_image(data, decoders=decoders).pixels, upright)


def test_png_orientation_after_the_image_data_is_found(upright: np.ndarray) -> None:
    """An eXIf chunk may follow IDAT; the header check finds it without decoding the pixels."""
    data = encode(orient(upright, 8), "PNG")
    exif = Image.Exif()
    exif[0x0112] = 6
    payload = exif.tobytes()[6:]  # without the "Exif\0\0" prefix, as PNG stores it
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload
    crc = struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    iend = data.rindex(b"IEND") - 4
    moved = data[:iend] + chunk + crc + data[iend:]
    assert read_header(moved).orientation == 6
    assert np.array_equal(decode_image(moved).pixels, upright)


def _variants(upright: np.ndarray) -> dict[str, tuple[bytes, bool]]:
    """Every accepted kind of file: name -> (bytes, lossless)."""
    rgb = Image.fromarray(np.ascontiguousarray(upright[:, :, ::-1]))

    def save(image: Image.Image, fmt: str, **options: object) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    sixteen = (np.asarray(rgb).astype(np.uint16) * 257)[:, :, ::-1]
    ok, png16 = cv2.imencode(".png", np.ascontiguousarray(sixteen))
    assert ok
    frames = [rgb, rgb.rotate(180), rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return {
        "jpeg": (save(rgb, "JPEG", quality=95), False),
        "progressive-jpeg": (save(rgb, "JPEG", quality=95, progressive=True), False),
        "grayscale-jpeg": (save(rgb.convert("L"), "JPEG", quality=95), False),
        "cmyk-jpeg": (save(rgb.convert("CMYK"), "JPEG", quality=95), False),
        "mpo": (save(rgb, "MPO", save_all=True, append_images=[rgb.rotate(180)]), False),
        "png": (save(rgb, "PNG"), True),
        "png-16-bit": (png16.tobytes(), True),
        "png-alpha": (save(rgb.convert("RGBA"), "PNG"), True),
        "png-palette": (save(rgb.quantize(256), "PNG"), False),
        "png-grayscale": (save(rgb.convert("L"), "PNG"), False),
        "png-grayscale-alpha": (save(rgb.convert("LA"), "PNG"), False),
        "webp-lossy": (save(rgb, "WEBP", quality=95), False),
        "webp-lossless": (save(rgb, "WEBP", lossless=True), True),
        "bmp": (save(rgb, "BMP"), True),
        "tiff": (save(rgb, "TIFF"), True),
        "tiff-jpeg": (save(rgb, "TIFF", compression="jpeg"), False),
        "gif-first-frame": (save(frames[0], "GIF", save_all=True, append_images=frames[1:]), False),
        "avif": (save(rgb, "AVIF", quality=95), False),
    }


def test_every_accepted_format_is_detected(detector: Detector, upright: np.ndarray) -> None:
    expected = detector.detect(upright)
    for name, (data, lossless) in _variants(upright).items():
        header = inspect_image(data, ImageLimits())
        assert header.format in ("JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF", "AVIF")
        image = decode_image(data, 416)
        assert image.pixels.shape == upright.shape and image.pixels.dtype == np.uint8, name
        found = detector.detect(image.pixels)
        if lossless:
            assert np.array_equal(image.pixels, upright), name
            assert_same_objects(expected, found)
        else:
            # Grey, palette and GIF variants lose colour: the elephants and the person remain.
            assert {"elephant", "person"} <= {d.label for d in found}, (name, found)


@pytest.mark.parametrize(
    ("major", "compatible"),
    [(b"heic", (b"mif1", b"heic")), (b"mif1", (b"heic",)), (b"heix", ()), (b"msf1", (b"hevc",))],
)
def test_heic_is_unsupported_not_undecodable(major: bytes, compatible: tuple[bytes, ...]) -> None:
    with pytest.raises(UnsupportedImageFormatError) as raised:
        read_header(heic_header(major, compatible))
    assert "HEIC" in str(raised.value) and SUPPORTED_NAMES in str(raised.value)
    assert "not a decodable image" not in str(raised.value)


def test_other_iso_media_files_are_not_images() -> None:
    with pytest.raises(ImageDecodeError) as raised:
        read_header(heic_header(b"isom", (b"mp42",)))
    assert not isinstance(raised.value, UnsupportedImageFormatError)


@pytest.mark.parametrize(
    ("fmt", "name"), [("PPM", "PPM"), ("JPEG2000", "JPEG2000"), ("ICO", "ICO")]
)
def test_images_in_other_formats_are_unsupported(upright: np.ndarray, fmt: str, name: str) -> None:
    data = encode(upright[:64, :64], fmt)
    with pytest.raises(UnsupportedImageFormatError) as raised:
        read_header(data)
    assert str(raised.value).startswith(fmt) and SUPPORTED_NAMES in str(raised.value)


# ----------------------------------------------------------------------------- truncated JPEGs


def jpeg_scans(data: bytes) -> list[int]:
    return [m.start() for m in re.finditer(b"\xff\xda", data)]


def test_a_one_pixel_jpeg_without_its_end_marker_is_the_intact_image() -> None:
    data = encode(np.full((1, 1, 3), (10, 20, 200), np.uint8), "JPEG")
    assert data.endswith(b"\xff\xd9")
    assert np.array_equal(decode_image(data[:-2]).pixels, decode_image(data).pixels)


@pytest.mark.parametrize("progressive", [False, True])
def test_a_photo_without_its_end_marker_gets_the_intact_answer(
    detector: Detector, upright: np.ndarray, progressive: bool
) -> None:
    data = encode(upright, "JPEG", quality=90, progressive=progressive)
    intact = decode_image(data)
    for cut in (data[:-2], data[:-1]):  # both bytes of the marker missing, or only the last
        assert np.array_equal(decode_image(cut).pixels, intact.pixels)
        assert detector.detect_bytes(cut) == detector.detect_bytes(data)


@pytest.mark.parametrize("progressive", [False, True])
def test_a_jpeg_cut_short_is_refused(upright: np.ndarray, progressive: bool) -> None:
    data = encode(upright, "JPEG", quality=90, progressive=progressive)
    cuts = [len(data) // 2, len(data) * 9 // 10, len(data) - 12]
    # A progressive file cut exactly between two scans is a complete-looking, coarser picture.
    cuts += jpeg_scans(data)[1:]
    for cut in cuts:
        with pytest.raises(ImageDecodeError, match="is the file complete"):
            decode_image(data[:cut])


def test_a_cut_large_jpeg_is_refused_at_reduced_scale_too(upright: np.ndarray) -> None:
    large = encode(cv2.resize(upright, (1920, 1440)), "JPEG", quality=90)
    assert np.array_equal(decode_image(large[:-2], 416).pixels, decode_image(large, 416).pixels)
    with pytest.raises(ImageDecodeError):
        decode_image(large[: len(large) // 2], 416)


# ----------------------------------------------------------------------------- size-aware decoding


@pytest.mark.parametrize(
    ("size", "input_size", "expected"),
    [
        ((640, 480), 416, 1),
        ((1661, 1247), 416, 1),
        ((1664, 1248), 416, 2),
        ((1248, 1664), 416, 2),
        ((4000, 3000), 416, 4),
        ((6000, 4000), 416, 4),
        ((8064, 6048), 416, 8),
        ((4000, 3000), 608, 2),
        ((4000, 3000), None, 1),
    ],
)
def test_reduction_keeps_twice_the_network_input(
    size: tuple[int, int], input_size: int | None, expected: int
) -> None:
    assert reduction_for(*size, input_size) == expected


def test_a_640_pixel_photo_is_decoded_at_full_size(photos: list[Path]) -> None:
    for photo in photos:
        data = photo.read_bytes()
        assert np.array_equal(decode_image(data, 416).pixels, cv2.imread(str(photo)))


def jpeg_declaring(width: int, height: int, progressive: bool = False, sampling: str = "4:2:0"):
    """A small real JPEG whose frame header is patched to declare ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, "JPEG", progressive=progressive, subsampling=sampling)
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize(("width", "height"), [(6000, 4000), (4000, 6000), (5656, 4242)])
def test_24_megapixel_jpegs_are_accepted(progressive: bool, width: int, height: int) -> None:
    header = inspect_image(jpeg_declaring(width, height, progressive), ImageLimits())
    assert header.reduction == 4 and header.progressive is progressive
    assert header.samples_per_pixel == 1.5
    full_chroma = read_header(jpeg_declaring(width, height, progressive, "4:4:4"))
    assert full_chroma.samples_per_pixel == 3.0


def test_48_megapixel_baseline_jpegs_are_accepted() -> None:
    header = inspect_image(jpeg_declaring(8064, 6048), ImageLimits())
    assert header.reduction == 8 and header.decoded_size == (1008, 756)


def test_progressive_jpegs_are_bounded_by_their_coefficient_memory() -> None:
    """A progressive JPEG keeps every coefficient at full size, whatever the scale decoded."""
    limits = ImageLimits()
    # Measured peaks: 141.5 MiB for either, above the 130.8 MiB of a 4096x4096 full-size decode.
    for big in (
        jpeg_declaring(6000, 4000, progressive=True, sampling="4:4:4"),
        jpeg_declaring(8064, 6048, progressive=True),
    ):
        with pytest.raises(ImageTooLargeError, match="progressive"):
            inspect_image(big, limits)
    assert inspect_image(jpeg_declaring(6000, 4000, True, "4:2:2"), limits).progressive
    baseline = read_header(jpeg_declaring(6000, 4000), 416)
    progressive = read_header(jpeg_declaring(6000, 4000, progressive=True), 416)
    # 4:2:0 chroma: 1.5 samples a pixel, 2 bytes each.
    assert decode_cost(progressive) - decode_cost(baseline) >= 6000 * 4000 * 3 - 20 * 2**20


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (jpeg_declaring(10_000, 6_000), "declares 60000000 pixels"),
        (encode(np.zeros((8, 8, 3), np.uint8), "PNG"), None),
    ],
)
def test_declared_and_decoded_pixels_have_their_own_limits(data: bytes, message: str | None):
    limits = ImageLimits(max_pixels=1_000_000, max_declared_pixels=50_000_000)
    if message is None:
        assert inspect_image(data, limits).decoded_size == (8, 8)
        return
    with pytest.raises(ImageTooLargeError, match=message):
        inspect_image(data, limits)


def test_the_decoded_limit_applies_to_formats_decoded_at_full_size() -> None:
    limits = ImageLimits(max_pixels=4096 * 4096)
    with pytest.raises(ImageTooLargeError):
        inspect_image(png_declaring(4097, 4096), limits)
    assert inspect_image(jpeg_declaring(6000, 4000), limits).reduction == 4


def test_decode_cost_follows_the_decode_plan() -> None:
    full = ImageHeader("PNG", 4000, 3000)
    reduced = ImageHeader("JPEG", 4000, 3000, reduction=4)
    turned = ImageHeader("JPEG", 3000, 4000, orientation=6, reduction=4)
    progressive = ImageHeader("JPEG", 4000, 3000, reduction=4, progressive=True)
    assert decode_cost(reduced) < decode_cost(full) / 4
    assert decode_cost(turned) == decode_cost(reduced)
    # The coefficient buffers are full size: 4:4:4 colour, 2 bytes a sample.
    assert decode_cost(progressive) > 4000 * 3000 * 3 * 2
    # Measured (bench-decode memory): 12.9 MiB for 640x480, 130.8 MiB for 4096x4096 at full size.
    assert 12 * 2**20 < decode_cost(ImageHeader("JPEG", 640, 480)) < 16 * 2**20
    assert 128 * 2**20 < decode_cost(ImageHeader("PNG", 4096, 4096)) < 140 * 2**20


def test_boxes_of_a_reduced_decode_are_in_the_original_pixels(
    detector: Detector, upright: np.ndarray
) -> None:
    large = cv2.resize(upright, (2560, 1920), interpolation=cv2.INTER_CUBIC)
    data = encode(large, "JPEG", quality=92)
    assert read_header(data, 416).reduction == 2  # 2560 / 4 = 640 < 832
    expected = [_scaled(d, 4) for d in detector.detect(upright)]
    assert f1(expected, detector.detect_bytes(data)) >= 0.9


def _scaled(d: Detection, factor: int) -> Detection:
    return Detection(
        d.label, d.confidence, d.left * factor, d.top * factor, d.width * factor, d.height * factor
    )


def test_unreadable_bytes_raise(tmp_path: Path) -> None:
    for data in (b"definitely not an image", b"\xff\xd8\xff\xe0 pretend jpeg", b""):
        with pytest.raises(ImageDecodeError):
            decode_image(data)


def test_malformed_scan_headers_in_a_file_without_end_marker_are_refused(
    upright: np.ndarray,
) -> None:
    data = encode(upright[:64, :64], "JPEG")[:-2]
    sos = jpeg_scans(data)[0]
    for broken in (data[: sos + 5], data[: sos + 2] + b"\x00\x03\x05" + data[sos + 5 :]):
        with pytest.raises(ImageDecodeError):
            decode_image(broken)
