"""What the per-request options, the detailed answer and the annotated JPEG add to a request.

Each variant runs the service's own request path on one thread, the inference pool's queue hop
aside: the Flask request is parsed, the options parsed and resolved, the image decoded, letterboxed
and forwarded, the rows decoded into detections (with the request's thresholds and classes), the
boxes drawn if asked (``Detector.run``'s steps, taken one by one so they can be timed), and the
answer rendered. OpenCV runs on this thread alone (``set_compute_threads(1)``), so the thread's CPU
clock counts all of it and nothing else. The variants alternate image by image, their order
rotated every round, so machine noise falls on all of them alike; each variant's cost is the
median, over rounds and images, of its CPU ms minus the plain request's on the same image in the
same round: for the whole request, and for the request less its letterbox and forward pass (which
no option changes, and whose few ms of jitter would hide what the options cost).

    python -m iweblens.bench.api_cost [IMAGES_FOLDER] [--rounds N] [--count N]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from flask import Flask, request
from werkzeug.test import EnvironBuilder

from iweblens.bench.claims import machine_lines
from iweblens.bench.photos import jpg_photos
from iweblens.config import Settings
from iweblens.detection import Inference
from iweblens.inference.annotate import MAX_SIDE, annotate
from iweblens.inference.detector import Detector
from iweblens.inference.engines import set_compute_threads
from iweblens.inference.pixels import decode_image
from iweblens.inference.pool import InferencePool, model_card
from iweblens.models.store import ModelStore
from iweblens.service.answers import answer
from iweblens.service.app import create_app
from iweblens.service.context import build_service, service_of
from iweblens.service.options import parse_options, query_lists
from iweblens.service.wire import parse_request

# Form fields of each variant. "options" asks for the default thresholds explicitly, so its answer
# is the plain one and only the options' own cost shows; "classes" is a 10-class filter (it keeps
# every object of the committed photos).
TEN_CLASSES = "person,dog,car,bus,elephant,cup,orange,bowl,broccoli,frisbee"
VARIANTS: dict[str, dict[str, str]] = {
    "plain": {},
    "options": {"min_confidence": "0.5", "nms": "0.45", "max_detections": "100"},
    "classes": {"classes": TEN_CLASSES},
    "details": {"details": "true"},
    "annotate": {"annotate": "true"},
}


def request_cpu_ms(
    app: Flask, detector: Detector, image: Path, fields: dict[str, str]
) -> tuple[float, float]:
    """Thread CPU ms of one multipart request, and of the same less its letterbox and forward.

    The client's side (encoding the multipart body) is done before the clock starts.
    """
    data = {"image": (io.BytesIO(image.read_bytes()), image.name), **fields}
    environ = EnvironBuilder("/api/object_detection", method="POST", data=data).get_environ()
    started = time.thread_time()
    with app.request_context(environ):
        detection_request = parse_request(request)
        options = parse_options(detection_request, query_lists(request.args))
        served = service_of(app).models.resolve(options.model)
        params = options.params(service_of(app).pool.model, served)
        decoded = decode_image(detection_request.image, detector.input_size)
        network_started = time.thread_time()
        blob, box = detector.letterboxer(decoded.pixels)
        rows = detector.engine.forward(blob)
        network = time.thread_time() - network_started
        width, height = decoded.width, decoded.height
        detections = detector.postprocess(rows, box, width, height, params)
        frame = (width, height)
        drawn = annotate(decoded.pixels, detections, MAX_SIDE, frame) if params.annotate else None
        inference = Inference(detections, width, height, drawn)
        answer(detection_request, options, params, inference, served).get_data()
    total = time.thread_time() - started
    return total * 1000, (total - network) * 1000


def measure(images: Sequence[Path], rounds: int) -> list[dict[str, tuple[float, float]]]:
    """``request_cpu_ms`` of every variant, one row per image and round (variants alternated)."""
    settings = Settings.from_env()
    paths = ModelStore.in_cache(settings.model_dir, progress=False).verified_paths()
    set_compute_threads(1)
    detector = Detector.from_settings(settings, paths)
    pool = InferencePool(lambda: detector, workers=0, model=model_card(settings, paths))
    app = create_app(build_service(settings, pool))
    names = list(VARIANTS)
    for image in images[:2]:  # warm-up: first forward passes and first imports
        request_cpu_ms(app, detector, image, {})
    rows = []
    for round_index in range(rounds):
        shift = round_index % len(names)
        for image in images:
            rows.append(
                {name: request_cpu_ms(app, detector, image, VARIANTS[name])
                 for name in names[shift:] + names[:shift]}
            )  # fmt: skip
    return rows


def report(rows: Sequence[dict[str, tuple[float, float]]]) -> list[str]:
    """A Markdown table per variant: CPU ms and what it adds to the plain request, whole and
    less the forward pass (medians; the 25th-75th percentile of the per-run differences)."""
    lines = [
        "| variant | request CPU ms | added | added, 25th-75th pct "
        "| without forward: CPU ms | added | added, 25th-75th pct |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in VARIANTS:
        cells = []
        for part in (0, 1):
            spent = [row[name][part] for row in rows]
            added = [row[name][part] - row["plain"][part] for row in rows]
            low, _, high = statistics.quantiles(added, n=4) if len(added) > 1 else (added[0],) * 3
            cells += [
                f"{statistics.median(spent):.2f}",
                f"{statistics.median(added):+.2f}",
                f"{low:+.2f} to {high:+.2f}",
            ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines.append(f"\n{len(rows)} runs of each variant.")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, nargs="?", default=Path("tests/images"))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--count", type=int, default=32, help="images used (first N by name)")
    args = parser.parse_args(argv)
    images = jpg_photos(args.images, args.count)
    rows = measure(images, args.rounds)
    heading = [*machine_lines(), f"- {len(images)} images x {args.rounds} rounds, one thread", ""]
    print("\n".join([*heading, *report(rows)]))


if __name__ == "__main__":
    main()
