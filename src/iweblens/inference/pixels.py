"""Image bytes to pixels: the decode itself, in the orientation a viewer shows.

* Boxes are in the displayed orientation: the orientation the header check read (EXIF for JPEG,
  PNG and WebP, TIFF's own tag, AVIF's rotation and mirror properties; all eight values) is
  applied here on every decode path, so OpenCV and the Pillow fallback cannot disagree.
* A JPEG that lacks only its end marker is decoded as if it had one; a JPEG cut short is not
  (``_end_marker_repair`` says where the line is).
* A large JPEG is decoded at the reduction its header planned; boxes are still given in the
  original image's pixels (``DecodedImage.width``/``height``).

OpenCV decodes; Pillow is the fallback for the files OpenCV refuses.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from iweblens.detection import ImageDecodeError
from iweblens.inference.headers import scans_cover_the_frame
from iweblens.inference.images import (
    JPEG_FORMATS,
    ORIENTATION_TAG,
    ImageHeader,
    read_header,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

_REDUCED_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
_EOI = b"\xff\xd9"

# A decoder turns bytes into stored-orientation BGR pixels at a JPEG reduction, or None.
Decoder = Callable[[bytes, int], "np.ndarray | None"]


@dataclass(frozen=True)
class DecodedImage:
    """Decoded pixels (8-bit BGR, displayed orientation, maybe reduced) and the displayed size.

    ``width`` x ``height`` is the original image's displayed size: boxes found in ``pixels`` are
    scaled to it, so a reduced decode still answers in the original's pixels.
    """

    pixels: np.ndarray
    width: int
    height: int


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
