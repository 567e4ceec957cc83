"""Draw detections on a copy of the decoded image and encode it as a JPEG.

It runs on the inference thread right after detection, on the image that thread already decoded,
so an annotated answer costs no second decode and no network pass. The copy is drawn at most
``MAX_SIDE`` pixels on its longer side: a 4096x4096 upload is drawn at 1280x1280 (4.9 MB of pixels)
rather than copied whole (50 MB), which keeps an annotated request inside the pod's memory budget.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from iweblens.detection import Detection

MAX_SIDE = 1280
JPEG_QUALITY = 90
# Saturated BGR colours, far from each other and from most photographs' greys; one per class,
# cycled by class index, so a class has the same colour in every image.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 0, 255),  # magenta
    (0, 255, 255),  # yellow
    (255, 255, 0),  # cyan
    (0, 255, 0),  # green
    (0, 128, 255),  # orange
    (255, 0, 0),  # blue
    (0, 0, 255),  # red
    (255, 128, 0),  # azure
    (128, 0, 255),  # pink
    (0, 255, 128),  # spring green
)
TEXT_COLOUR = (16, 16, 16)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def colour_of(class_id: int) -> tuple[int, int, int]:
    """The BGR colour boxes of class ``class_id`` are drawn in."""
    return PALETTE[class_id % len(PALETTE)]


def drawing_scale(width: int, height: int, max_side: int) -> float:
    """Factor from image pixels to annotated-copy pixels (1.0 when the image is small enough)."""
    return min(1.0, max_side / max(width, height))


def annotate(
    image_bgr: np.ndarray,
    detections: Sequence[Detection],
    max_side: int,
    frame: tuple[int, int] | None = None,
) -> bytes:
    """A JPEG of ``image_bgr`` (HxWx3 uint8) with every detection's box and label drawn.

    Boxes are in the pixels of ``frame`` = (width, height): the original image when
    ``image_bgr`` is a reduced decode of it; ``image_bgr``'s own size by default. The copy is the
    frame scaled by ``drawing_scale``. The most confident detection is drawn last, so it is on
    top where boxes overlap.
    """
    height, width = image_bgr.shape[:2]
    frame_width, frame_height = frame or (width, height)
    scale = drawing_scale(frame_width, frame_height, max_side)
    size = (max(1, round(frame_width * scale)), max(1, round(frame_height * scale)))
    canvas = (
        cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)
        if size != (width, height)
        else image_bgr.copy()
    )
    long_side = max(size)
    thickness = max(3, round(long_side / 320))
    font_scale = max(0.4, long_side / 1600)
    ordered = sorted(detections, key=lambda d: d.confidence)
    for d in ordered:
        x0, y0 = round(d.left * scale), round(d.top * scale)
        x1, y1 = round((d.left + d.width) * scale), round((d.top + d.height) * scale)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour_of(d.class_id), thickness)
    for d in ordered:
        _draw_tag(canvas, d, scale, font_scale)
    ok, encoded = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode the annotated image as JPEG")
    return encoded.tobytes()


def _draw_tag(canvas: np.ndarray, d: Detection, scale: float, font_scale: float) -> None:
    """The label and percentage on a filled tag above the box (inside it at the top edge)."""
    text = f"{d.label} {d.confidence * 100:.0f}%"
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, font_scale, 1)
    pad = max(2, text_h // 4)
    tag_h = text_h + baseline + 2 * pad
    x0 = round(d.left * scale)
    y_top = round(d.top * scale)
    y0 = y_top - tag_h if y_top >= tag_h else y_top
    x0 = min(x0, max(0, canvas.shape[1] - text_w - 2 * pad))
    cv2.rectangle(canvas, (x0, y0), (x0 + text_w + 2 * pad, y0 + tag_h), colour_of(d.class_id), -1)
    origin = (x0 + pad, y0 + pad + text_h)
    cv2.putText(canvas, text, origin, FONT, font_scale, TEXT_COLOUR, 1, cv2.LINE_AA)
