"""darknet's letterbox: the network input made from a photograph exactly as darknet makes it.

The image is resized with darknet's corner-aligned bilinear resize on float pixels in [0, 1],
keeping its aspect ratio, centred on 0.5 grey, and laid out RGB, NCHW: a 1x3xSxS float32 blob.

Two implementations give bit-identical blobs (the tests compare them on real photographs):

- the C extension ``iweblens.inference._letterbox``, built by ``pip install`` where a C compiler
  is found: one pass over the pixels the resize reads, no temporaries, the GIL released;
- NumPy (``darknet_resize``), the reference, used where the extension could not be built and for
  images that are not (H, W, 3) uint8 arrays.

``Letterboxer`` owns its blob and rewrites it for each image, so a detector that keeps one per
inference thread makes no large allocation per image (and no page faults to back one).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

import numpy as np

_native: ModuleType | None
try:
    _native = importlib.import_module("iweblens.inference._letterbox")
except ImportError:  # built without a C compiler: the NumPy path serves
    _native = None

# darknet's pixels are floats in [0, 1], and its letterbox pads with mid grey.
PIXEL_SCALE = 1 / 255
GREY = 0.5
NATIVE = "native C extension"
NUMPY = "NumPy"


def native_available() -> bool:
    """True when the C extension was built and imports."""
    return _native is not None


@dataclass(frozen=True)
class Letterbox:
    """Where the resized image sits inside the square network input."""

    size: int
    new_width: int
    new_height: int

    @classmethod
    def fit(cls, width: int, height: int, size: int) -> Letterbox:
        """darknet's new size for a ``width`` x ``height`` image: the long side becomes ``size``,
        the short one keeps the aspect ratio (integer division, at least one pixel).

        Raises ZeroDivisionError for an empty image.
        """
        if size / width < size / height:
            return cls(size, size, max(1, height * size // width))
        return cls(size, max(1, width * size // height), size)

    @property
    def offset_x(self) -> int:
        return (self.size - self.new_width) // 2

    @property
    def offset_y(self) -> int:
        return (self.size - self.new_height) // 2


def _axis_weights(source: int, target: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of darknet's corner-aligned linear resize along one axis."""
    scale = np.float32(source - 1) / np.float32(target - 1) if target > 1 else np.float32(0)
    coords = np.arange(target, dtype=np.float32) * scale
    low = coords.astype(np.int64)
    frac = (coords - low).astype(np.float32)
    return low, np.minimum(low + 1, source - 1), frac


def darknet_resize(image: np.ndarray, width: int, height: int, scale: float = 1.0) -> np.ndarray:
    """Resize an HxWxC image exactly as darknet's ``resize_image`` does, on float pixels.

    Pixels are multiplied by ``scale`` as they are turned into floats; only the source columns
    the resize reads are converted, so a large photograph never exists as a float copy.
    """
    src_h, src_w = image.shape[:2]
    low, high, frac = _axis_weights(src_w, width)
    # darknet takes the last column straight from the source's last column.
    low[-1], frac[-1] = src_w - 1, 0.0
    left = image[:, low].astype(np.float32) * np.float32(scale)
    right = image[:, high].astype(np.float32) * np.float32(scale)
    part = left * (1 - frac)[None, :, None] + right * frac[None, :, None]
    low, high, frac = _axis_weights(src_h, height)
    below = frac.copy()
    # ...and gives the last row no share of the row below it (even if the float index fell short).
    below[-1] = 0.0
    resized: np.ndarray = part[low] * (1 - frac)[:, None, None] + part[high] * below[:, None, None]
    return resized


def _native_takes(image: np.ndarray) -> bool:
    return image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


class Letterboxer:
    """Makes 1x3xSxS network inputs into one blob it owns: one letterboxer per inference thread.

    Not thread-safe, and each call overwrites the blob the previous call returned.
    """

    def __init__(self, size: int, *, native: bool | None = None) -> None:
        """``native``: True for the C extension (RuntimeError if it is not built), False for
        NumPy, None for the C extension where it is built."""
        if native and _native is None:
            raise RuntimeError("the C letterbox (iweblens.inference._letterbox) was not built")
        self.size = size
        self.native = native_available() if native is None else native
        self.blob = np.empty((1, 3, size, size), dtype=np.float32)

    @property
    def implementation(self) -> str:
        """Which code makes the blobs of (H, W, 3) uint8 images: ``NATIVE`` or ``NUMPY``."""
        return NATIVE if self.native else NUMPY

    def __call__(self, image_bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """The letterboxed blob of an HxWx3 BGR image (any dtype, any strides) and its geometry;
        the blob is ``self.blob``, valid until the next call.

        Raises ZeroDivisionError for an empty image, IndexError or ValueError for an image that
        does not have three channels, IndexError for a side beyond 2**24 pixels where float32
        rounding indexes past the edge (darknet's arithmetic, on either path).
        """
        height, width = image_bgr.shape[:2]
        box = Letterbox.fit(width, height, self.size)
        left, top, new_w, new_h = box.offset_x, box.offset_y, box.new_width, box.new_height
        if _native is not None and self.native and _native_takes(image_bgr):
            _native.letterbox_into(
                image_bgr, self.blob, self.size, left, top, new_w, new_h, PIXEL_SCALE
            )
        else:
            resized = darknet_resize(image_bgr[:, :, ::-1], new_w, new_h, scale=PIXEL_SCALE)
            self.blob.fill(GREY)
            self.blob[0, :, top : top + new_h, left : left + new_w] = resized.transpose(2, 0, 1)
        return self.blob, box


def letterbox(image_bgr: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Make the network input in a new blob: aspect-preserving resize, centred on 0.5 grey, RGB,
    NCHW (1x3x``size``x``size`` float32). A detector reuses one blob through ``Letterboxer``."""
    return Letterboxer(size)(image_bgr)
