"""Detections from image bytes: decoding, the darknet-exact letterbox, the engines, the pool.

Never imports Flask or the service; the web layer calls in through ``InferencePool``.
"""

from iweblens.inference.cost import decode_cost, work_units
from iweblens.inference.detector import Detector
from iweblens.inference.engines import ENGINES, Engine, create_engine, set_compute_threads
from iweblens.inference.images import (
    ImageHeader,
    ImageLimits,
    ImageTooLargeError,
    UnsupportedImageFormatError,
    inspect_image,
)
from iweblens.inference.letterbox import Letterbox, Letterboxer
from iweblens.inference.pixels import DecodedImage, decode_image, limit_decoded_pixels
from iweblens.inference.pool import InferencePool, ModelUnavailableError, build_pool
from iweblens.inference.resources import cpu_allotment, threads_for

# Not letterbox() itself: that name would hide the module iweblens.inference.letterbox.
__all__ = [
    "ENGINES",
    "DecodedImage",
    "Detector",
    "Engine",
    "ImageHeader",
    "ImageLimits",
    "ImageTooLargeError",
    "InferencePool",
    "Letterbox",
    "Letterboxer",
    "ModelUnavailableError",
    "UnsupportedImageFormatError",
    "build_pool",
    "cpu_allotment",
    "create_engine",
    "decode_cost",
    "decode_image",
    "inspect_image",
    "limit_decoded_pixels",
    "set_compute_threads",
    "threads_for",
    "work_units",
]
