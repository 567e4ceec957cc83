"""Image bytes in: the header check, before anything is decoded.

The contract (README, "Images"): the service detects what an image viewer shows.

* Accepted formats are ``SUPPORTED_FORMATS``; anything else an image library recognises (HEIC,
  JPEG 2000, PPM...) is refused as unsupported, never as "not an image".
* The stored orientation (EXIF, TIFF's own tag, AVIF's rotation and mirror) is read here, once,
  and applied by ``iweblens.inference.pixels`` on every decode path.
* Large JPEGs are planned at 1/2, 1/4 or 1/8 of their size in the DCT domain, never below
  ``REDUCED_MIN_LONG_SIDE`` times the network input on the long side (``reduction_for``).
* What cannot be bounded from the header is refused from it (``read_header``, ``inspect_image``).

The header check reads sizes with Pillow and the bounded walks of ``headers``, never the pixels.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

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
    walk_jpeg,
)

if TYPE_CHECKING:
    pass

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
ORIENTATION_TAG = 0x0112
DEFAULT_INPUT_SIZE = Settings.input_size  # the network input when a caller names none


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
