"""Image bytes in: the header check before decoding, the decode itself, and the decoders' limit.

The header check reads sizes with Pillow and never the pixels; the decode uses OpenCV and falls
back to Pillow for formats OpenCV cannot read (GIF...).
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from iweblens.detection import ImageDecodeError
from iweblens.inference.letterbox import native_available


class ImageTooLargeError(ImageDecodeError):
    """The image declares more pixels than the configured limit."""


@dataclass(frozen=True)
class ImageHeader:
    format: str
    width: int
    height: int


def inspect_image(data: bytes, max_pixels: int) -> ImageHeader:
    """Read the image header (never the pixels) and refuse non-images and oversized images.

    Checking the declared size before decoding is what stops a decompression bomb: a few
    kilobytes of PNG can declare 50000x50000 pixels, 7.5 GB once decoded.

    Raises ``ImageTooLargeError`` above ``max_pixels``, ``ImageDecodeError`` for bytes that are
    not an image or an image without pixels.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                header = ImageHeader(image.format or "unknown", *image.size)
    except Image.DecompressionBombError:
        header = None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ImageDecodeError("the data is not a decodable image") from None
    if header is None or header.width * header.height > max_pixels:
        raise ImageTooLargeError(f"the image declares more than the limit of {max_pixels} pixels")
    if header.width < 1 or header.height < 1:
        raise ImageDecodeError("the image has no pixels")
    return header


# Peak bytes per declared pixel while an image is decoded and letterboxed: OpenCV's JPEG decoder
# holds two copies of the 3-byte BGR image at its peak; the C letterbox adds nothing, the NumPy
# one its float rows. Measured as peak RSS on a live server over 1024x768 to 4096x4096 JPEGs,
# less the body: 5.5-5.7 bytes a pixel with the C letterbox, 7.5 with NumPy (docs/reliability.md).
DECODE_BYTES_PER_PIXEL = {True: 6, False: 8}  # keyed by "the C letterbox is built"
# The network input, its output and the per-call buffers, whatever the image size.
DECODE_FIXED_BYTES = 8 * 1024 * 1024
# One work unit is the inference of one 640x480 photograph (forward pass plus a small decode);
# decoding and resizing a large image adds about one unit per 12 million pixels.
PIXELS_PER_WORK_UNIT = 12_000_000


def decode_cost(header: ImageHeader) -> int:
    """Peak bytes the process needs, beyond the request body, to decode and letterbox this image.

    An estimate from the header alone (the request is admitted before it is decoded): linear in
    the declared pixels. Decoding at a reduced size would change it; this is the one place to.
    """
    per_pixel = DECODE_BYTES_PER_PIXEL[native_available()]
    return header.width * header.height * per_pixel + DECODE_FIXED_BYTES


def work_units(header: ImageHeader) -> float:
    """Inference time of this image, in units of one 640x480 photograph's (for queue waits)."""
    return 1.0 + header.width * header.height / PIXELS_PER_WORK_UNIT


def decode_image(data: bytes) -> np.ndarray:
    """Decode bytes into an 8-bit BGR image; Pillow covers formats OpenCV cannot read (GIF...)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is not None:
        return image
    try:
        with Image.open(io.BytesIO(data)) as pil:
            rgb = np.asarray(pil.convert("RGB"))
    except Exception as error:  # Pillow raises many types for corrupt data
        raise ImageDecodeError("the data is not a decodable image") from error
    return np.ascontiguousarray(rgb[:, :, ::-1])


def limit_decoded_pixels(max_pixels: int) -> None:
    """Make both decoders refuse images larger than ``max_pixels`` (process-wide settings).

    The request's header check reads sizes with Pillow; a file crafted so that OpenCV sees
    another size would otherwise slip past it. OpenCV reads its limit on first use.
    """
    os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(max_pixels)
    Image.MAX_IMAGE_PIXELS = max_pixels
