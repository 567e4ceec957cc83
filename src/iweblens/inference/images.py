"""Image bytes in: the header check before decoding, and the decode itself.

The contract (README, "Images"): the service detects what an image viewer shows.

* Accepted formats are ``SUPPORTED_FORMATS``; anything else an image library recognises (HEIC,
  JPEG 2000, PPM...) is refused as unsupported, never as "not an image".
* Boxes are in the displayed orientation: the EXIF orientation (JPEG, PNG, WebP, TIFF, where it is
  TIFF's own orientation tag) and AVIF's rotation and mirror properties are applied, all eight
  values including the mirrored ones, on every decode path. The stored orientation is read once,
  from the header, and applied here, so OpenCV and the Pillow fallback cannot disagree.
* A JPEG that lacks only its end marker is decoded as if it had one; a JPEG cut short is not
  (``_end_marker_repair`` says where the line is).
* Large JPEGs are decoded at 1/2, 1/4 or 1/8 of their size in the DCT domain, never below
  ``REDUCED_MIN_LONG_SIDE`` times the network input on the long side; boxes are still given in
  the original image's pixels (``DecodedImage.width``/``height``).

The header check reads sizes with Pillow and never the pixels; the decode uses OpenCV and falls
back to Pillow for the files OpenCV refuses.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from iweblens.config import Settings
from iweblens.detection import ImageDecodeError
from iweblens.inference.cost import cost_limit, decode_cost
from iweblens.inference.headers import (
    AVIF_BRANDS,
    HEIF_BRANDS,
    JPEG_SOI,
    PNG_SIGNATURE,
    JpegFrame,
    av1_layout,
    iso_brands,
    png_chunks,
    scans_cover_the_frame,
    walk_jpeg,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

# Pillow's names of the formats the service accepts ("MPO" is how Pillow names a camera JPEG that
# carries a second, multi-picture image: the first picture is a JPEG like any other).
SUPPORTED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")
SUPPORTED_NAMES = "JPEG, PNG, WebP, GIF, BMP, TIFF or AVIF"
JPEG_FORMATS = ("JPEG", "MPO")
# Progressive work: each scan walks every MCU of the frame again, whatever data it carries, so a
# JPEG's scans x MCUs is bounded (docs/reliability.md has the measurements behind the numbers),
# and so are its scans alone. Marker segments are bounded too: Pillow and the walk read each in
# Python, and a real JPEG has tens (a few hundred with a chunked ICC profile).
MAX_SCANS = 500
MAX_SCAN_MCUS = 8_000_000
MAX_SEGMENTS = 4096
# PNG chunks: Pillow reads those before the image data in Python, the walk all of them. libpng
# keeps at most 1000 ancillary chunks (its user_chunk_cache_max); encoders split the image data
# into chunks of 8 KiB (libpng) to 64 KiB (Pillow).
MAX_PNG_ANCILLARY_CHUNKS = 1000
MAX_PNG_CHUNKS = 65536
# The smallest decoded long side a reduced JPEG decode may leave, in network inputs: 2 agreed best
# with the 640-px originals on photos upscaled to 12 and 24 MP, better than 1 or 4 or a full-size
# decode (docs/decoding.md).
REDUCED_MIN_LONG_SIDE = 2
REDUCTIONS = (8, 4, 2)
_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
ORIENTATION_TAG = 0x0112
DEFAULT_INPUT_SIZE = Settings.input_size  # the network input when a caller names none
_EOI = b"\xff\xd9"

# A decoder turns bytes into stored-orientation BGR pixels at a JPEG reduction, or None.
Decoder = Callable[[bytes, int], "np.ndarray | None"]


class ImageTooLargeError(ImageDecodeError):
    """The image declares more pixels, or needs more memory, than the configured limits."""


class UnsupportedImageFormatError(ImageDecodeError):
    """A valid image in a format the service does not decode (HEIC, JPEG 2000...)."""


@dataclass(frozen=True)
class ImageLimits:
    """What a request's image may be: the header check refuses anything beyond these.

    ``max_pixels`` bounds the decoded image (after any reduced JPEG decode), and with it the
    memory every format costs; ``max_declared_pixels`` bounds what a header may declare (a JPEG
    decoded at 1/4 may declare up to 16 times ``max_pixels``, but never more than this).
    ``input_size`` is the network input, which sets how far a JPEG may be reduced.
    """

    max_pixels: int = Settings.max_pixels
    max_declared_pixels: int = Settings.max_declared_pixels
    input_size: int = Settings.input_size

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(settings.max_pixels, settings.max_declared_pixels, settings.input_size)


@dataclass(frozen=True)
class ImageHeader:
    """What the header says, and how the image will be decoded.

    ``width`` and ``height`` are the stored size in pixels (before orientation); ``orientation``
    is the EXIF value 1-8 (1 = upright); ``reduction`` the JPEG scale denominator (1, 2, 4, 8);
    ``progressive`` and ``samples_per_pixel`` (colour samples per pixel after chroma subsampling)
    size a progressive JPEG's coefficient buffers; ``input_size`` is the network input the plan
    is for (the letterbox's share of ``decode_cost``); ``scans`` the SOS scans a JPEG declares
    (1 for other formats); ``lossless`` a lossless JPEG (SOF3/7/11/15), never decoded reduced.
    For an AVIF, ``samples_per_pixel`` and ``bits_per_sample`` are its AV1 stream's (4:2:0 = 1.5,
    4:4:4 = 3; 8, 10 or 12 bits), which size the decoder's planes. ``arithmetic`` marks a JPEG
    whose entropy coding is arithmetic (slower to decode than Huffman coding).
    """

    format: str
    width: int
    height: int
    orientation: int = 1
    reduction: int = 1
    progressive: bool = False
    samples_per_pixel: float = 3.0
    input_size: int = DEFAULT_INPUT_SIZE
    scans: int = 1
    lossless: bool = False
    bits_per_sample: int = 8
    arithmetic: bool = False

    @cached_property
    def decode_bytes(self) -> int:
        """``decode_cost`` of this plan, computed once: the header check and admission share it."""
        return decode_cost(self)

    @property
    def decoded_size(self) -> tuple[int, int]:
        """(width, height) of the decoded pixels, before orientation: libjpeg rounds up."""
        return -(-self.width // self.reduction), -(-self.height // self.reduction)

    @property
    def displayed_size(self) -> tuple[int, int]:
        """(width, height) a viewer shows, in original pixels: the frame boxes are given in."""
        if self.orientation >= 5:
            return self.height, self.width
        return self.width, self.height


@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels (8-bit BGR, displayed orientation, maybe reduced) and the displayed size.

    ``width`` x ``height`` is the original image's displayed size: boxes found in ``pixels`` are
    scaled to it, so a reduced decode still answers in the original's pixels.
    """

    pixels: np.ndarray
    width: int
    height: int


def reduction_for(width: int, height: int, input_size: int | None) -> int:
    """The largest JPEG scale denominator that keeps the long side >= 2 x ``input_size``."""
    if input_size is None:
        return 1
    floor = REDUCED_MIN_LONG_SIDE * input_size
    long_side = max(width, height)
    return next((r for r in REDUCTIONS if -(-long_side // r) >= floor), 1)


def read_header(data: bytes, input_size: int | None = None) -> ImageHeader:
    """The header of an accepted image, and its decode plan for a network of ``input_size``.

    Reads the header only (never the pixels). Raises ``UnsupportedImageFormatError`` for images
    in other formats (the HEIF family is recognised by its ftyp brand), ``ImageTooLargeError``
    when Pillow's own bomb limit trips or the walk's limits are passed (``_walk_within_limits``:
    a JPEG's scans and segments, a PNG's chunks), ``ImageDecodeError`` for bytes that are not an
    image, an image without pixels, a damaged AVIF, a PNG chunk declaring more bytes than the
    file holds or a JPEG frame header libjpeg refuses.
    """
    # Walked before Pillow reads it: Pillow's own walk (to a JPEG's first scan, to a PNG's first
    # image data chunk) would be unbounded.
    walk = _walk_within_limits(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                header = _header_of(image, data, input_size, walk)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLargeError("the image declares more pixels than the limit") from None
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        struct.error,
        RuntimeError,
    ) as error:
        brands = iso_brands(data)
        if brands & AVIF_BRANDS:
            # Pillow's AVIF plugin raises RuntimeError for much of what libavif refuses.
            raise ImageDecodeError("the AVIF file is damaged") from None
        if isinstance(error, RuntimeError):
            raise  # not from the AVIF plugin: a bug, not a bad image
        if brands & HEIF_BRANDS:
            raise UnsupportedImageFormatError(
                f"HEIC/HEIF images are not supported; send {SUPPORTED_NAMES}"
            ) from None
        raise ImageDecodeError("the data is not a decodable image") from None
    if header.width < 1 or header.height < 1:
        raise ImageDecodeError("the image has no pixels")
    return header


def inspect_image(data: bytes, limits: ImageLimits) -> ImageHeader:
    """``read_header`` plus the limits: what stops a decompression bomb before any decoding.

    A few kilobytes of PNG can declare 50000x50000 pixels, 7.5 GB once decoded. Raises
    ``ImageTooLargeError`` above ``limits`` (declared pixels, decoded pixels, decode memory), and
    what ``read_header`` raises.
    """
    header = read_header(data, limits.input_size)
    declared = header.width * header.height
    if declared > limits.max_declared_pixels:
        raise ImageTooLargeError(
            f"the image declares {declared} pixels, more than the limit of "
            f"{limits.max_declared_pixels}"
        )
    decoded_width, decoded_height = header.decoded_size
    if decoded_width * decoded_height > limits.max_pixels:
        raise ImageTooLargeError(
            f"the image declares more than the limit of {limits.max_pixels} pixels"
        )
    if header.decode_bytes > cost_limit(header, limits):
        raise ImageTooLargeError(
            f"decoding this {header.width}x{header.height} progressive JPEG needs more memory "
            f"than a {limits.max_pixels}-pixel image; send it as a baseline JPEG or smaller"
        )
    return header


def decode_image(
    data: bytes,
    input_size: int | None = None,
    *,
    decoders: Sequence[Decoder] | None = None,
    header: ImageHeader | None = None,
) -> DecodedImage:
    """Decode bytes into 8-bit BGR pixels in the displayed orientation.

    With ``input_size`` (the network input), a large JPEG is decoded at reduced size
    (``reduction_for``); without it, at full size. Raises ``UnsupportedImageFormatError`` and
    ``ImageDecodeError`` as ``read_header`` does, and ``ImageDecodeError`` for pixels that cannot
    be decoded (a file cut short). ``decoders`` are tried in turn (default ``DECODERS``:
    OpenCV, then Pillow; tests name one path). ``header``: ``read_header(data, input_size)``
    when the caller has read it already (it is not read again).
    """
    decoders = decoders or DECODERS
    if header is None:
        header = read_header(data, input_size)
    if header.format == "TIFF" and header.orientation != 1:
        # Both libraries rotate TIFFs themselves (depending on their versions): make them not to.
        try:
            data = _tiff_marked_upright(data)
        except (struct.error, IndexError):
            raise ImageDecodeError("the TIFF's first directory is cut short") from None
    pixels = _decode_pixels(data, header.reduction, decoders)
    if pixels is None and header.format in JPEG_FORMATS:
        repaired = _end_marker_repair(data, header.reduction)
        if repaired is not None:
            pixels = _decode_pixels(repaired, header.reduction, decoders)
    if pixels is None:
        raise ImageDecodeError("the data is not a decodable image (is the file complete?)")
    width, height = header.displayed_size
    return DecodedImage(orient(pixels, header.orientation), width, height)


def _decode_pixels(data: bytes, reduction: int, decoders: Sequence[Decoder]) -> np.ndarray | None:
    """Stored-orientation BGR pixels from the first decoder that succeeds, else None."""
    for decoder in decoders:
        pixels = decoder(data, reduction)
        if pixels is not None:
            return pixels
    return None


def decode_with_opencv(data: bytes, reduction: int = 1) -> np.ndarray | None:
    """OpenCV's decode, orientation ignored (applied by ``orient``); None if OpenCV refuses."""
    flags = _REDUCED_FLAGS[reduction] | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:  # over OpenCV's own pixel limit, or a decoder assertion
        return None
    return pixels


def decode_with_pillow(data: bytes, reduction: int = 1) -> np.ndarray | None:
    """Pillow's decode (first frame), no orientation, JPEGs at ``reduction``; None if refused."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if reduction > 1:
                image.draft("RGB", (-(-image.width // reduction), -(-image.height // reduction)))
            rgb = np.asarray(image.convert("RGB"))
    except Exception:  # Pillow raises many types for corrupt data
        return None
    return np.ascontiguousarray(rgb[:, :, ::-1])


def orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels (H x W x C) into what a viewer shows for EXIF ``orientation`` 1-8.

    2 mirrors left-right, 3 turns 180 degrees, 4 mirrors top-bottom, 5 transposes, 6 turns 90
    degrees clockwise, 7 transverses, 8 turns 90 degrees anticlockwise (the EXIF 2.3 table).
    """
    if orientation >= 5:
        # 5-8 are 1-4 applied after a transpose.
        pixels = pixels.transpose(1, 0, 2)
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    if orientation == 1:
        return np.ascontiguousarray(pixels)
    rows = slice(None, None, -1) if orientation in (3, 4) else slice(None)
    columns = slice(None, None, -1) if orientation in (2, 3) else slice(None)
    return np.ascontiguousarray(pixels[rows, columns])


DECODERS: tuple[Decoder, ...] = (decode_with_opencv, decode_with_pillow)


def limit_decoded_pixels(max_pixels: int) -> None:
    """Make both decoders refuse images declaring more than ``max_pixels`` (process-wide).

    The request's header check reads sizes with Pillow; a file crafted so that OpenCV sees
    another size would otherwise slip past it. OpenCV checks the declared size even when it
    decodes at reduced scale, so this is the declared-pixel cap. OpenCV reads it on first use.
    """
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(max_pixels)
    Image.MAX_IMAGE_PIXELS = max_pixels


# ----------------------------------------------------------------------------- the header


@dataclass(frozen=True)
class _Walk:
    """What the header walks found: a JPEG's frame and scans, a PNG's eXIf payload."""

    frame: JpegFrame | None = None
    scans: int = 1
    png_exif: bytes | None = None


def _walk_within_limits(data: bytes) -> _Walk:
    """Walk a JPEG's segments or a PNG's chunks, within the limits above.

    Raises ``ImageTooLargeError`` beyond ``MAX_SEGMENTS``, ``MAX_SCANS``, ``MAX_SCAN_MCUS``,
    ``MAX_PNG_CHUNKS`` or ``MAX_PNG_ANCILLARY_CHUNKS``; ``ImageDecodeError`` for a JPEG without
    a frame header or with one libjpeg refuses, and a PNG chunk beyond the bytes present.
    """
    if data.startswith(PNG_SIGNATURE):
        ancillary = 0
        exif = None
        for chunks, (kind, payload) in enumerate(png_chunks(data), 1):
            ancillary += kind[0] & 0x20 != 0  # a lower-case first letter: an ancillary chunk
            if chunks > MAX_PNG_CHUNKS or ancillary > MAX_PNG_ANCILLARY_CHUNKS:
                raise ImageTooLargeError(
                    f"the PNG has more than {MAX_PNG_CHUNKS} chunks or more than "
                    f"{MAX_PNG_ANCILLARY_CHUNKS} ancillary ones"
                )
            if kind == b"eXIf" and exif is None:
                exif = bytes(payload)
        return _Walk(png_exif=exif)
    if not data.startswith(JPEG_SOI):
        return _Walk()
    walk = walk_jpeg(data, MAX_SCANS, MAX_SEGMENTS)
    if walk.segments > MAX_SEGMENTS:
        raise ImageTooLargeError(f"the JPEG has more than {MAX_SEGMENTS} marker segments")
    if walk.frame is None:
        raise ImageDecodeError("the data is not a decodable image (the JPEG has no frame header)")
    frame = walk.frame
    if walk.scans > MAX_SCANS or walk.scans * frame.mcus > MAX_SCAN_MCUS:
        scans = f"more than {MAX_SCANS}" if walk.scans > MAX_SCANS else str(walk.scans)
        raise ImageTooLargeError(
            f"this {frame.width}x{frame.height} JPEG declares {scans} scans of {frame.mcus} MCUs; "
            f"at most {MAX_SCANS} scans and {MAX_SCAN_MCUS} scans x MCUs are decoded"
        )
    return _Walk(frame, walk.scans)


def _header_of(image: Image.Image, data: bytes, input_size: int | None, walk: _Walk) -> ImageHeader:
    if image.format not in SUPPORTED_FORMATS:
        raise UnsupportedImageFormatError(
            f"{image.format or 'this'} images are not supported; send {SUPPORTED_NAMES}"
        )
    width, height = image.size
    orientation = _orientation(image, walk.png_exif)
    if image.format == "TIFF":
        # Pillow >= 11 reports a rotated TIFF's displayed size; the tags hold the stored one.
        width, height = image.tag_v2.get(256, width), image.tag_v2.get(257, height)  # type: ignore[attr-defined]
    size = input_size or DEFAULT_INPUT_SIZE
    if image.format == "AVIF":
        bits, samples = av1_layout(data)
        return ImageHeader(
            "AVIF",
            width,
            height,
            orientation,
            samples_per_pixel=samples,
            input_size=size,
            bits_per_sample=bits,
        )
    if image.format not in JPEG_FORMATS:
        return ImageHeader(image.format, width, height, orientation, input_size=size)
    frame = walk.frame
    assert frame is not None, "Pillow's JPEG files start with SOI, which read_header walked"
    return ImageHeader(
        image.format,
        width,
        height,
        orientation,
        # libjpeg decodes a lossless frame at full size whatever the scale asked for.
        reduction=1 if frame.lossless else reduction_for(width, height, input_size),
        progressive=bool(image.info.get("progressive")),
        samples_per_pixel=_samples_per_pixel(image),
        input_size=size,
        scans=walk.scans,
        lossless=frame.lossless,
        arithmetic=frame.arithmetic,
    )


def _orientation(image: Image.Image, png_exif: bytes | None) -> int:
    """The stored EXIF orientation (1 when absent or invalid), read without decoding pixels."""
    if image.format in ("GIF", "BMP"):
        return 1  # neither format can carry one
    if image.format == "PNG":
        # Pillow loads every pixel to find an eXIf chunk after the image data: the walk found it.
        payload = image.info.get("exif") or png_exif
        exif = Image.Exif()
        if payload:
            exif.load(payload)
    else:
        exif = image.getexif()
    value = exif.get(ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _samples_per_pixel(image: Image.Image) -> float:
    """Colour samples per pixel after chroma subsampling (3 for 4:4:4, 1.5 for 4:2:0)."""
    layers = getattr(image, "layer", None) or []
    if not layers:
        return 3.0
    h_max = max(layer[1] for layer in layers)
    v_max = max(layer[2] for layer in layers)
    return float(sum(layer[1] * layer[2] for layer in layers) / (h_max * v_max))


def _tiff_marked_upright(data: bytes) -> bytes:
    """A copy of a TIFF whose first IFD's orientation tag says 1 (stored = displayed).

    Classic TIFF (12-byte entries) and BigTIFF (20-byte entries), either byte order; the pixels
    are not touched, so decoding the copy gives the stored pixels for ``orient`` to turn.
    """
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack_from(order + "H", data, 2)[0] == 43
    if big:
        (ifd,) = struct.unpack_from(order + "Q", data, 8)
        (count,) = struct.unpack_from(order + "Q", data, ifd)
        first, size = ifd + 8, 20
    else:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        first, size = ifd + 2, 12
    patched = bytearray(data)
    for entry in range(first, first + count * size, size):
        tag, kind = struct.unpack_from(order + "HH", data, entry)
        if tag == ORIENTATION_TAG and kind == 3:  # SHORT, stored in the entry itself
            struct.pack_into(order + "H", patched, entry + (12 if big else 8), 1)
    return bytes(patched)


# ----------------------------------------------------------------------------- truncated JPEGs

# Entropy-coded bytes appended after a scan to test whether the scan still wants data (no 0xFF,
# so they can never form a marker; two patterns so that no Huffman table decodes both as nothing).
_FILLERS = (bytes(64), bytes(range(1, 129)))


def _end_marker_repair(data: bytes, reduction: int) -> bytes | None:
    """``data`` with its end marker restored when only the end marker is missing, else None.

    The line: the file ends inside the entropy-coded data of its last scan; every coefficient of
    every component is covered by the scans present (a progressive file cut between scans is
    not); and the last scan asks for no more data: the pixels decoded at ``reduction`` with the
    end marker appended are identical to those decoded with filler bytes before it. A scan cut
    short decodes the filler as image data (and libjpeg would grey-fill the rest), so it fails.
    Pillow's process-wide truncated-image switch is not used: it grey-fills half files.
    """
    body = data[:-1] if data.endswith(b"\xff") else data  # the marker's first byte may be there
    try:
        if not scans_cover_the_frame(body):
            return None
    except (IndexError, ValueError, struct.error):  # a segment shorter than its fields
        return None
    repaired = body + _EOI
    reference = decode_with_pillow(repaired, reduction)
    if reference is None:
        return None
    for filler in _FILLERS:
        probe = decode_with_pillow(body + filler + _EOI, reduction)
        if probe is None or not np.array_equal(probe, reference):
            return None
    return repaired
