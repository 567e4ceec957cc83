"""The one result type of a detection, and the error for bytes that are not an image.

Pure Python with no imports of ours, so the wire protocol, the agreement metric and every engine
can share it without importing OpenCV.
"""

from __future__ import annotations

from dataclasses import dataclass


class ImageDecodeError(ValueError):
    """The bytes are not an image that can be decoded."""


@dataclass(frozen=True)
class Detection:
    """One object: its COCO label, a confidence in [0, 1], and a box in image pixels."""

    label: str
    confidence: float
    left: int
    top: int
    width: int
    height: int
