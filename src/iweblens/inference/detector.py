"""YOLOv3-tiny detection that reproduces the original darknet program's answers.

The details that make OpenCV agree with ``darknet detector test`` (F1 0.99 on COCO photographs)
are darknet's own: a corner-aligned bilinear letterbox computed on float pixels with 0.5 grey
padding, class scores that already include objectness, every class above the threshold reported,
and NMS per class at IoU 0.45.
"""

from __future__ import annotations

import numpy as np

from iweblens.config import Settings
from iweblens.detection import Detection, DetectionParams, Inference
from iweblens.inference.annotate import MAX_SIDE, annotate
from iweblens.inference.engines import SCORE_FLOOR, Engine, create_engine
from iweblens.inference.images import ImageHeader
from iweblens.inference.letterbox import Letterbox, Letterboxer
from iweblens.inference.nms import NmsKind
from iweblens.inference.nms import nms as suppress
from iweblens.inference.pixels import decode_image
from iweblens.models.darknet import cfg_nms_kind
from iweblens.models.store import ModelPaths

DEFAULT_PARAMS = DetectionParams()


class Detector:
    """Letterbox, forward, decode: one engine and one letterbox blob, so one detector per thread."""

    def __init__(
        self,
        engine: Engine,
        labels: list[str],
        *,
        input_size: int = 416,
        confidence: float = 0.5,
        nms: float = 0.45,
        nms_kind: NmsKind = "iou",
    ) -> None:
        """``nms_kind``: the suppression rule the model's cfg asks for (``nms.nms``)."""
        self.engine = engine
        self.labels = labels
        self.input_size = input_size
        self.confidence = confidence
        self.nms = nms
        self.nms_kind = nms_kind
        self.letterboxer = Letterboxer(input_size)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        paths: ModelPaths,
        engine: str | None = None,
        *,
        input_size: int | None = None,
    ) -> Detector:
        """A detector of the model files ``paths`` with a fresh engine and the thresholds.

        ``engine`` and ``input_size``: the model's own (None: ``settings.engine`` and
        ``settings.input_size``, the server-wide defaults).
        """
        size = input_size or settings.input_size
        return cls(
            create_engine(engine or settings.engine, paths, size),
            paths.labels(),
            input_size=size,
            confidence=settings.confidence,
            nms=settings.nms,
            nms_kind=cfg_nms_kind(paths.cfg),
        )

    def detect_bytes(self, data: bytes) -> list[Detection]:
        """Decode an encoded image (large JPEGs at reduced size) and detect objects in it.

        Boxes are in the original image's pixels, in the orientation a viewer shows.
        """
        return self.run(data).detections

    def run(
        self,
        data: bytes,
        params: DetectionParams = DEFAULT_PARAMS,
        header: ImageHeader | None = None,
    ) -> Inference:
        """Decode, detect with ``params``, and draw the boxes if ``params.annotate`` asks.

        Large JPEGs are decoded at reduced size; boxes, width and height are the original's, in
        the orientation a viewer shows. ``header``: the image's header when already read (used
        when read for this network's input size, else read again). Raises ``ImageDecodeError``
        for bytes that are not an image (``UnsupportedImageFormatError``, ``ImageTooLargeError``
        for the kinds of refusal).
        """
        if header is not None and header.input_size != self.input_size:
            header = None
        image = decode_image(data, self.input_size, header=header)
        frame = (image.width, image.height)
        detections = self.detect(image.pixels, params, size=frame)
        drawn = annotate(image.pixels, detections, MAX_SIDE, frame) if params.annotate else None
        return Inference(detections, image.width, image.height, drawn)

    def detect(
        self,
        image_bgr: np.ndarray,
        params: DetectionParams = DEFAULT_PARAMS,
        *,
        size: tuple[int, int] | None = None,
    ) -> list[Detection]:
        """Detect objects in a BGR image; the result is sorted by confidence, highest first.

        Boxes are in pixels of a ``size`` = (width, height) image (default: the array's own); a
        larger size maps the boxes of a reduced decode back to the original's pixels.
        """
        blob, box = self.letterboxer(image_bgr)
        width, height = size or (image_bgr.shape[1], image_bgr.shape[0])
        return self.postprocess(self.engine.forward(blob), box, width, height, params)

    def postprocess(
        self,
        rows: np.ndarray,
        box: Letterbox,
        width: int,
        height: int,
        params: DetectionParams = DEFAULT_PARAMS,
    ) -> list[Detection]:
        """Turn YOLO rows into detections in original-image pixels (darknet's box arithmetic).

        A confidence below ``SCORE_FLOOR`` behaves as the floor: the engine zeroed those scores.
        With ``params.relabel`` (a view), ``class_id`` is the answered label's index in the
        view's labels.
        """
        requested = self.confidence if params.confidence is None else params.confidence
        confidence = max(requested, SCORE_FLOOR)
        nms = self.nms if params.nms is None else params.nms
        scores = rows[:, 5:]
        wanted = self._wanted(params)
        columns = None if wanted is None else np.array(wanted, dtype=np.int64)
        if columns is not None:
            scores = scores[:, columns]
        row_idx, column_idx = np.nonzero(scores > confidence)
        if row_idx.size == 0:
            return []
        class_idx = column_idx if columns is None else columns[column_idx]
        size = np.float32(box.size)
        cx = (rows[row_idx, 0] - box.offset_x / size) / (box.new_width / size)
        cy = (rows[row_idx, 1] - box.offset_y / size) / (box.new_height / size)
        bw = rows[row_idx, 2] * (size / box.new_width)
        bh = rows[row_idx, 3] * (size / box.new_height)
        left, right = (cx - bw / 2) * width, (cx + bw / 2) * width
        top, bottom = (cy - bh / 2) * height, (cy + bh / 2) * height
        confidences = scores[row_idx, column_idx]
        labels = [self.labels[i] for i in class_idx.tolist()]
        if params.relabel is not None:
            # A view's classes answered under one label are suppressed as one class: a car
            # and a truck box on the same vehicle must not give two "vehicle" boxes.
            answered = list(dict.fromkeys(params.relabel.values()))
            labels = [params.relabel[label] for label in labels]
            class_idx = np.array([answered.index(label) for label in labels], dtype=np.int64)
        keep = suppress(
            np.stack([left, top, right - left, bottom - top], axis=1),
            confidences,
            class_idx,
            confidence,
            nms,
            self.nms_kind,
            image_size=(width, height),
        )
        detections = []
        for i in keep:
            # darknet truncates to int, then clips to the image.
            x0, x1 = max(int(left[i]), 0), min(int(right[i]), width - 1)
            y0, y1 = max(int(top[i]), 0), min(int(bottom[i]), height - 1)
            detections.append(
                Detection(
                    label=labels[i],
                    confidence=float(confidences[i]),
                    left=x0,
                    top=y0,
                    width=max(x1 - x0, 0),
                    height=max(y1 - y0, 0),
                    class_id=int(class_idx[i]),
                )
            )
        detections.sort(key=lambda d: (-d.confidence, d.label, d.left, d.top))
        return detections[: params.max_detections]

    def _wanted(self, params: DetectionParams) -> list[int] | None:
        """The class columns a request keeps (None: every one)."""
        if params.classes is None and params.relabel is None:
            return None
        return [
            index
            for index, name in enumerate(self.labels)
            if (params.classes is None or name in params.classes)
            and (params.relabel is None or name in params.relabel)
        ]
