"""Header walkers: what a file's own structure says, read without decoding and without copies.

Pillow reads an image's size and mode; these walks read what it does not, or trusts: every PNG
chunk length (a decoder allocates what a chunk declares), a JPEG's frame type, sampling factors
and scans (lossless frames cannot be decoded at reduced scale; each scan of a progressive frame
walks every MCU again), and an ISO base media file's brands (HEIF or AVIF). Each walk goes by
``struct.unpack_from`` and ``bytes.find``/regular expressions over the bytes in place: its Python
work grows with the number of chunks, segments or brands, never with the size of their payloads.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from iweblens.detection import ImageDecodeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# Frame (SOF) markers: C0-CF but for DHT (C4), JPG (C8) and DAC (CC).
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
LOSSLESS_SOF = frozenset({0xC3, 0xC7, 0xCB, 0xCF})
ARITHMETIC_SOF = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
SOS, EOI = 0xDA, 0xD9
# ISO base media file format brands (ftyp box) of AVIF, and of HEIF-family still images (AVIF
# files name mif1 too: an AVIF brand decides).
AVIF_BRANDS = frozenset({b"avif", b"avis"})
HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)
# A real ftyp box lists a handful of compatible brands; reading more would only cost time.
MAX_COMPATIBLE_BRANDS = 64
# After a scan header, the entropy-coded data runs to the first 0xFF that is not stuffing
# (FF 00), a restart marker (FF D0-D7) or a fill byte (FF FF).
_MARKER_AFTER_ENTROPY_DATA = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")


class Ending:
    """How a JPEG walk ended: at the end marker, inside a scan's data, or cut elsewhere."""

    EOI = "end marker"
    IN_SCAN = "inside a scan"
    CUT = "cut inside the headers"


class JpegSegments:
    """The marker segments of a JPEG from SOI to EOI, as (marker, payload) pairs.

    ``payload`` is a ``memoryview`` of the segment after its length field. A scan's entropy-coded
    data is skipped (found with a regular expression, not byte by byte). After iterating,
    ``ending`` says where the walk stopped (``Ending``). Bytes after EOI (an MPO's second
    picture, trailing padding) are not walked.
    """

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.ending = Ending.CUT

    def __iter__(self) -> Iterator[tuple[int, memoryview]]:
        data, view = self.data, memoryview(self.data)
        position = 2
        while True:
            while data[position + 1 : position + 2] == b"\xff":
                position += 1  # fill bytes before a marker
            if position + 2 > len(data) or data[position] != 0xFF:
                self.ending = Ending.CUT
                return
            marker = data[position + 1]
            if marker == EOI:
                self.ending = Ending.EOI
                return
            if position + 4 > len(data):
                self.ending = Ending.CUT
                return
            (length,) = struct.unpack_from(">H", data, position + 2)
            end = position + 2 + length
            if end > len(data):
                self.ending = Ending.CUT
                return
            yield marker, view[position + 4 : end]
            position = end
            if marker == SOS:
                found = _MARKER_AFTER_ENTROPY_DATA.search(data, position)
                if found is None:
                    self.ending = Ending.IN_SCAN
                    return
                position = found.start()


@dataclass(frozen=True)
class JpegFrame:
    """What a JPEG's frame header declares.

    ``mcus`` is the number of MCUs of an interleaved scan (8 x 8 blocks of the most sampled
    component, each covering ``8 * h_max`` x ``8 * v_max`` pixels); ``lossless`` a SOF3/7/11/15
    frame; ``arithmetic`` a frame whose entropy coding is arithmetic (slower to decode than
    Huffman coding).
    """

    width: int
    height: int
    progressive: bool
    lossless: bool
    mcus: int
    arithmetic: bool = False


@dataclass(frozen=True)
class JpegWalk:
    """A JPEG's first frame header (None if none was met), and its scans and marker segments
    before the end marker, each counted no further than one past its limit."""

    frame: JpegFrame | None
    scans: int
    segments: int


def walk_jpeg(data: bytes, max_scans: int, max_segments: int) -> JpegWalk:
    """Walk a JPEG's segments until its end marker, or until ``max_scans`` or ``max_segments``
    is passed.

    Raises ``ImageDecodeError`` for frame headers libjpeg refuses: cut short, no components,
    a sampling factor outside 1-4 (``JERR_BAD_SAMPLING``), a second one (``JERR_SOF_DUPLICATE``:
    Pillow would plan by the last, libjpeg decode by the first).
    """
    frame: JpegFrame | None = None
    scans = segments = 0
    for marker, segment in JpegSegments(data):
        segments += 1
        if marker in SOF_MARKERS:
            if frame is not None:
                raise ImageDecodeError("the JPEG has two frame headers")
            frame = _frame_header(marker, segment)
        elif marker == SOS:
            scans += 1
        if scans > max_scans or segments > max_segments:
            break
    return JpegWalk(frame, scans, segments)


def _frame_header(marker: int, segment: memoryview) -> JpegFrame:
    if len(segment) < 6 or segment[5] == 0 or len(segment) < 6 + 3 * segment[5]:
        raise ImageDecodeError("the JPEG frame header is cut short or has no components")
    height, width = struct.unpack_from(">HH", segment, 1)
    factors = [(b >> 4, b & 0x0F) for b in segment[7 : 6 + 3 * segment[5] : 3]]
    if any(not (1 <= h <= 4 and 1 <= v <= 4) for h, v in factors):
        raise ImageDecodeError("the JPEG frame header has a sampling factor outside 1-4")
    if len(factors) == 1:
        h_max = v_max = 1  # a single component's scans are not interleaved: one block an MCU
    else:
        h_max, v_max = max(h for h, _ in factors), max(v for _, v in factors)
    mcus = -(-width // (8 * h_max)) * -(-height // (8 * v_max))
    return JpegFrame(
        width,
        height,
        marker in PROGRESSIVE_SOF,
        marker in LOSSLESS_SOF,
        mcus,
        arithmetic=marker in ARITHMETIC_SOF,
    )


def av1_layout(data: bytes) -> tuple[int, float]:
    """(bits per sample, colour samples per pixel) of an AVIF, from its AV1 configuration boxes.

    The costliest over every ``av1C`` box (an alpha plane is an image item of its own); 12 bits
    in 4:4:4 when none can be read, so that an unreadable layout is never costed low.
    """
    bits, samples = 0, 0.0
    position = data.find(b"av1C")
    while 0 <= position <= len(data) - 7:
        flags = data[position + 6]  # high bit depth, twelve bit, monochrome, subsampling x, y
        depth = (12 if flags & 0x20 else 10) if flags & 0x40 else 8
        chroma = 0.0 if flags & 0x10 else 2 / ((1 + (flags >> 3 & 1)) * (1 + (flags >> 2 & 1)))
        bits, samples = max(bits, depth), max(samples, 1 + chroma)
        position = data.find(b"av1C", position + 4)
    return (bits, samples) if bits else (12, 3.0)


def scans_cover_the_frame(data: bytes) -> bool:
    """True when ``data`` ends inside its last scan and the scans cover the whole frame.

    Walks the JPEG markers from SOI. Sequential frames need every component in some scan;
    progressive frames need every coefficient of every component refined to full precision.
    Raises ``IndexError`` or ``ValueError`` for a segment shorter than its fields.
    """
    if not data.startswith(JPEG_SOI):
        return False
    components: list[int] = []
    progressive = False
    final: dict[int, set[int]] = {}
    segments = JpegSegments(data)
    for marker, segment in segments:
        if marker in SOF_MARKERS:
            progressive = marker in PROGRESSIVE_SOF
            components = [segment[6 + 3 * i] for i in range(segment[5])]
        elif marker == SOS:
            count = segment[0]
            start, end, approximation = segment[1 + 2 * count : 4 + 2 * count]
            if not progressive or approximation & 0x0F == 0:
                coefficients = range(start, end + 1) if progressive else range(64)
                for i in range(count):
                    final.setdefault(segment[1 + 2 * i], set()).update(coefficients)
    if segments.ending != Ending.IN_SCAN:
        return False
    return bool(components) and all(len(final.get(c, ())) == 64 for c in components)


def png_chunks(data: bytes) -> Iterator[tuple[bytes, memoryview]]:
    """The chunks of a PNG up to IEND, as (type, payload) pairs, walked by their lengths.

    Raises ``ImageDecodeError`` for a chunk that declares more bytes than the file holds
    (OpenCV's PNG reader allocates what a chunk declares before reading it), or a file cut
    inside a chunk's length and type. A file that ends between two chunks ends the walk (the
    decoders judge whether it is complete).
    """
    view = memoryview(data)
    position = len(PNG_SIGNATURE)
    while position + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data):
            raise ImageDecodeError(
                f"a PNG {kind.decode('latin-1')!r} chunk declares {length} bytes, more than "
                "the file holds"
            )
        yield kind, view[position + 8 : end - 4]
        if kind == b"IEND":
            return
        position = end
    if position < len(data):
        raise ImageDecodeError("the PNG file ends inside a chunk header")


def iso_brands(data: bytes) -> frozenset[bytes]:
    """The major and compatible brands of an ISO base media file's leading ftyp box.

    Empty for anything else. Reads at most ``MAX_COMPATIBLE_BRANDS`` compatible brands, and
    none beyond the box or the bytes present.
    """
    if len(data) < 16 or data[4:8] != b"ftyp":
        return frozenset()
    (size,) = struct.unpack_from(">I", data, 0)
    end = min(size, len(data), 16 + 4 * MAX_COMPATIBLE_BRANDS)
    compatible = memoryview(data)[16 : max(end - (end - 16) % 4, 16)]
    return frozenset({data[8:12], *(brand for (brand,) in struct.iter_unpack("4s", compatible))})
