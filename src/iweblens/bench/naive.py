"""The naive baseline the benchmark compares against: how most solutions to this assignment look.

Flask's development server with ``threaded=True``, the network read from disk on every request
(so nothing is shared between threads and nothing is warm), a stretched ``blobFromImage`` input,
a Python loop over the output rows and arg-max labels. It is deliberately not improved: it exists
to be measured under the same CPU limit as the service. Run it as
``python -m iweblens.bench.naive --port P --model-dir DIR``; it answers the reference client's
format.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from flask import Flask, jsonify, request

CONFIDENCE = 0.5
NMS = 0.4


def create_naive_app(model_dir: Path) -> Flask:
    app = Flask("naive")
    cfg, weights = str(model_dir / "yolov3-tiny.cfg"), str(model_dir / "yolov3-tiny.weights")
    names = model_dir / "coco.names"

    @app.route("/api/object_detection", methods=["POST"])
    def object_detection():  # type: ignore[no-untyped-def]
        labels = names.read_text().strip().split("\n")
        image = cv2.imdecode(np.frombuffer(request.files["image"].read(), np.uint8), 1)
        if image is None:  # a 500, as the usual implementation answers a non-image
            raise ValueError("not an image")
        height, width = image.shape[:2]
        net = cv2.dnn.readNetFromDarknet(cfg, weights)
        blob = cv2.dnn.blobFromImage(image, 1 / 255.0, (416, 416), swapRB=True, crop=False)
        net.setInput(blob)
        outputs = net.forward(net.getUnconnectedOutLayersNames())
        boxes, confidences, class_ids = [], [], []
        for output in outputs:
            for row in output:
                scores = row[5:]
                class_id = int(np.argmax(scores))
                confidence = float(scores[class_id])
                if confidence > CONFIDENCE:
                    cx, cy, w, h = row[0:4] * np.array([width, height, width, height])
                    boxes.append([int(cx - w / 2), int(cy - h / 2), int(w), int(h)])
                    confidences.append(confidence)
                    class_ids.append(class_id)
        keep = cv2.dnn.NMSBoxes(boxes, confidences, CONFIDENCE, NMS)
        objects = [
            {"label": labels[class_ids[i]], "accuracy": f"{confidences[i] * 100:.2f}"}
            for i in np.array(keep).reshape(-1)
        ]
        return jsonify({"objects": objects})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model-dir", type=Path, required=True)
    args = parser.parse_args()
    create_naive_app(args.model_dir).run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
