"""Hostile image files, built in code, and the pod attack that sends them.

Each builder makes a small file whose header lies about, or hides, what decoding it would cost:
a PNG chunk declaring more bytes than the file holds, a lossless JPEG (which libjpeg cannot
decode at reduced scale), an ISO base media body whose ``ftyp`` box spans the whole body, and a
progressive JPEG with thousands of empty scans. ``hostile_images`` sends one of each to a fresh
pod, with ordinary photographs alongside the scan flood, and judges the outcome.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from iweblens.bench.attacks.memory import RequestLimits
from iweblens.bench.attacks.results import AttackResult, Check, pod_figures, statuses_of
from iweblens.bench.http_client import exchange, multipart_body, photo_body
from iweblens.bench.pod import running_pod
from iweblens.config import Settings
from iweblens.harness.serving import LOOPBACK, replica_is_ready
from iweblens.inference.headers import PNG_SIGNATURE, walk_jpeg
from iweblens.inference.images import MAX_SEGMENTS, read_header

if TYPE_CHECKING:
    from iweblens.harness.manifest import PodSpec

# What the attack report sent: a 7300 x 5475 lossless JPEG and a 15,000-scan progressive JPEG.
LOSSLESS_SIZE = (7300, 5475)
FLOOD_SCANS = 15_000
FLOOD_SIZE = (4000, 3000)
# Damaged (a chunk beyond the file, a sampling factor 0, an AVIF's primary item missing), too
# large to decode (40 MP at full size, too many scans), a HEIF-branded file (unsupported).
EXPECTED_STATUSES = {
    "png-chunk": 400,
    "lossless-jpeg": 413,
    "ftyp-body": 415,
    "zero-sampling-jpeg": 400,
    "avif-no-primary-item": 400,
    "scan-flood": 413,
}
# A JPEG scan header for a DC refinement of all three components (Ah=1, Al=0): repeated with
# no entropy-coded data, libjpeg warns of a bogus progression but decodes every MCU again.
_DC_REFINEMENT_SCAN = b"\xff\xda\x00\x0c\x03\x01\x00\x02\x00\x03\x00\x00\x00\x10"


def png_chunk(kind: bytes, payload: bytes, declared: int | None = None) -> bytes:
    """One PNG chunk (length, type, payload, CRC); ``declared`` overrides the length field."""
    length = len(payload) if declared is None else declared
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", length) + kind + payload + crc


def png_declaring_chunk(declared: int = 256 * 2**20) -> bytes:
    """A 53-byte 1x1 PNG whose IDAT chunk declares ``declared`` bytes (none present)."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = struct.pack(">I", declared) + b"IDAT"
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + idat + png_chunk(b"IEND", b"")


def lossless_jpeg(width: int, height: int, components: int = 3, marker: int = 0xC3) -> bytes:
    """A valid lossless JPEG (SOF3 by default) of ``width`` x ``height`` mid-grey pixels.

    Predictor 1 with point transform 0: every difference is 0, coded by a one-symbol Huffman
    table as a single 0 bit, so the file is about ``width * height * components / 8`` bytes.
    ``marker`` may name another lossless frame type (0xC7, 0xCB, 0xCF) for header-only tests.
    """
    ids = bytes(range(1, components + 1))
    frame = struct.pack(">BHHB", 8, height, width, components)
    frame += b"".join(bytes((i, 0x11, 0)) for i in ids)
    huffman = b"\x00" + bytes((1,) + (0,) * 15) + b"\x00"  # DC table 0: symbol 0, 1-bit code
    scan = bytes((components,)) + b"".join(bytes((i, 0x00)) for i in ids) + b"\x01\x00\x00"
    entropy = bytes(-(-width * height * components // 8))
    return (
        b"\xff\xd8"
        + _segment(marker, frame)
        + _segment(0xC4, huffman)
        + _segment(0xDA, scan)
        + entropy
        + b"\xff\xd9"
    )


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def ftyp_body(size: int = 16 * 2**20, major: bytes = b"heic") -> bytes:
    """``size`` bytes starting like a HEIF: an ftyp box declaring itself as long as the body."""
    head = struct.pack(">I", size) + b"ftyp" + major + bytes(4)
    return head + b"mif1" * ((size - len(head)) // 4)


def progressive_jpeg(
    width: int, height: int, photo: Path | None = None, subsampling: str = "4:2:0"
) -> bytes:
    """A progressive JPEG as Pillow (libjpeg, 10 scans) writes it: ``photo`` scaled, else grey."""
    if photo is None:
        image = Image.new("RGB", (width, height), (120, 130, 140))
    else:
        with Image.open(photo) as source:
            image = source.convert("RGB").resize((width, height))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, progressive=True, subsampling=subsampling)
    return buffer.getvalue()


def scan_flood(base: bytes, scans: int) -> bytes:
    """``base`` (a progressive 3-component JPEG) with ``scans`` empty scans before its end."""
    end = base.rindex(b"\xff\xd9")
    return base[:end] + _DC_REFINEMENT_SCAN * scans + base[end:]


def flood_jpeg(photo: Path | None = None) -> bytes:
    """The attack report's kind of file: a 12 MP progressive JPEG with 15,000 extra empty scans."""
    return scan_flood(progressive_jpeg(*FLOOD_SIZE, photo), FLOOD_SCANS)


def decode_cpu_seconds(data: bytes, reduction: int = 1) -> float:
    """CPU seconds OpenCV takes to decode ``data`` at ``reduction``, in a fresh Python process.

    A fresh process so that no earlier decode's allocations or caches are counted or reused.
    """
    script = (
        "import sys, time; from iweblens.inference.pixels import decode_with_opencv; "
        "data = sys.stdin.buffer.read(); start = time.process_time(); "
        f"pixels = decode_with_opencv(data, {reduction}); "
        "print(time.process_time() - start if pixels is not None else 'refused')"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], input=data, capture_output=True, check=True
    ).stdout.decode()
    if output.strip() == "refused":
        raise ValueError("OpenCV refused the image")
    return float(output)


@dataclass(frozen=True)
class ScanCost:
    """The CPU of decoding one progressive JPEG with and without ``extra`` empty scans."""

    width: int
    height: int
    subsampling: str
    scans: int
    mcus: int
    extra: int
    base_s: float
    flooded_s: float

    @property
    def ns_per_scan_mcu(self) -> float:
        """CPU nanoseconds each extra scan costs per MCU of the frame."""
        return (self.flooded_s - self.base_s) / (self.extra * self.mcus) * 1e9


def scan_costs(
    sizes: Sequence[tuple[int, int]],
    subsamplings: Sequence[str] = ("4:2:0", "4:4:4"),
    extra: int = 200,
    photo: Path | None = None,
) -> list[ScanCost]:
    """Measure ``ScanCost`` for each size and chroma subsampling, decoded as the service plans."""
    costs = []
    for width, height in sizes:
        for subsampling in subsamplings:
            base = progressive_jpeg(width, height, photo, subsampling)
            header = read_header(base, Settings.input_size)
            flooded = scan_flood(base, extra)
            frame = walk_jpeg(base, header.scans, MAX_SEGMENTS).frame
            assert frame is not None, "read_header has walked it"
            costs.append(
                ScanCost(
                    width,
                    height,
                    subsampling,
                    header.scans,
                    frame.mcus,
                    extra,
                    decode_cpu_seconds(base, header.reduction),
                    decode_cpu_seconds(flooded, header.reduction),
                )
            )
    return costs


def jpeg_sampling(factors: Sequence[int], progressive: bool = False) -> bytes:
    """A 32x32 JPEG whose frame header gives its components these sampling-factor bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buffer, "JPEG", progressive=progressive)
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc2" if progressive else b"\xff\xc0")
    for i, factor in enumerate(factors):
        data[sof + 11 + 3 * i] = factor  # after the marker, length, precision, size, count, id
    return bytes(data)


def avif_without_primary_item(photo: Path) -> bytes:
    """A small AVIF of ``photo`` whose primary item box (pitm) names an item that is not there."""
    with Image.open(photo) as source:
        image = source.convert("RGB").resize((64, 48))
    buffer = io.BytesIO()
    image.save(buffer, "AVIF", quality=80)
    data = buffer.getvalue()
    pitm = data.index(b"pitm")
    return data[: pitm + 8] + struct.pack(">H", 9) + data[pitm + 10 :]  # version 0: 16-bit id


def hostile_images(
    spec: PodSpec, images: Sequence[Path], *, photos_during_flood: int = 20, timeout: float = 60.0
) -> AttackResult:
    """One request of each hostile image on a fresh pod, photographs sent during the scan flood.

    Passes when every hostile file gets its 4xx (``EXPECTED_STATUSES``), every photograph a
    200, the pod has 0 OOM kills and it is still ready (its readiness probe answers) afterwards.
    """
    # The ftyp body as large as the pod's body limit lets through: a header check's to read.
    room = RequestLimits.of(spec).max_body_bytes - len(multipart_body(b"").data)
    hostile = {
        "png-chunk": png_declaring_chunk(),
        "lossless-jpeg": lossless_jpeg(*LOSSLESS_SIZE),
        "ftyp-body": ftyp_body(room // 4 * 4),
        "zero-sampling-jpeg": jpeg_sampling((0, 0, 0)),
        "avif-no-primary-item": avif_without_primary_item(images[0]),
        "scan-flood": flood_jpeg(images[0]),
    }
    with running_pod(spec, "hostile-images") as pod:
        statuses: dict[str, int | str | None] = {}
        for name in [name for name in hostile if name != "scan-flood"]:
            outcome = exchange(pod.port, multipart_body(hostile[name]), timeout)
            statuses[name] = outcome.status or outcome.failure
        photo_outcomes = []

        def photographs() -> None:
            for index in range(photos_during_flood):
                photo_outcomes.append(exchange(pod.port, photo_body(images, index), timeout))

        sender = threading.Thread(target=photographs)
        sender.start()
        flood = exchange(pod.port, multipart_body(hostile["scan-flood"]), timeout)
        statuses["scan-flood"] = flood.status or flood.failure
        sender.join()
        time.sleep(0.5)
        ready = pod.alive and replica_is_ready(LOOPBACK, pod.port)
        photos = statuses_of(photo_outcomes)
        figures = {
            "statuses": statuses,
            "photographs": dict(photos),
            "ready_after": ready,
            **pod_figures(pod),
        }
    checks = [
        Check("every hostile image is refused with its 4xx", statuses == EXPECTED_STATUSES),
        Check(
            "every photograph sent during the scan flood is served (200)",
            photos == {"200": photos_during_flood},
        ),
        Check("0 OOM kills", figures["oom_kills"] == 0),
        Check("the pod is ready afterwards", bool(ready)),
    ]
    cell = f"{statuses}; photographs {dict(photos)}; OOM kills {figures['oom_kills']}"
    return AttackResult("hostile-images", figures, checks, cell)
