"""The service's own subcommands: ``serve``, ``detect`` and ``fetch-model``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from importlib.util import find_spec
from pathlib import Path

from .config import Settings
from .model_store import ModelIntegrityError, ModelPaths, ModelStore


def add_command(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run the detection service (uvicorn)")
    serve.add_argument("--host", help="address to bind (IWEBLENS_HOST, default 0.0.0.0)")
    serve.add_argument("--port", type=int, help="port to bind (IWEBLENS_PORT, default 5000)")
    serve.add_argument("--threads", type=int, help="request threads (IWEBLENS_THREADS, default 64)")
    serve.set_defaults(run=run_serve)

    detect = subparsers.add_parser("detect", help="detect objects in images, without a server")
    detect.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    detect.set_defaults(run=run_detect)

    fetch = subparsers.add_parser("fetch-model", help="fetch and verify the model files")
    fetch.set_defaults(run=run_fetch_model)


def _ensure_model(settings: Settings) -> ModelPaths:
    try:
        return ModelStore(settings.model_dir, progress=sys.stderr.isatty()).ensure()
    except ModelIntegrityError as error:
        raise SystemExit(f"iweblens: {error}") from None


def run_serve(args: argparse.Namespace) -> int:
    from .server import serve
    from .sizing import InsufficientMemoryError

    overrides = {
        name: value
        for name in ("host", "port", "threads")
        if (value := getattr(args, name)) is not None
    }
    settings = dataclasses.replace(Settings.from_env(), **overrides)
    _ensure_model(settings)
    try:
        serve(settings)
    except InsufficientMemoryError as error:
        # Exits non-zero with the reason, rather than being OOM-killed while loading, in a loop.
        raise SystemExit(f"iweblens: {error}") from None
    return 0


def run_detect(args: argparse.Namespace) -> int:
    from .detector import Detector, ImageDecodeError
    from .protocol import DetectionRequest, Flavour, render_detections

    settings = Settings.from_env()
    paths = _ensure_model(settings)
    detector = Detector.from_settings(settings, paths)
    results = {}
    for image in args.images:
        data = image.read_bytes()
        try:
            detections = detector.detect_bytes(data)
        except ImageDecodeError as error:
            print(f"iweblens: {image}: {error}", file=sys.stderr)
            return 1
        results[str(image)] = render_detections(
            DetectionRequest(data, Flavour.MULTIPART), detections
        )
    output = next(iter(results.values())) if len(results) == 1 else results
    print(json.dumps(output, indent=2))
    return 0


def run_fetch_model(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    paths = _ensure_model(settings)
    for path in (paths.cfg, paths.weights, paths.names):
        print(path)
    if find_spec("onnx"):
        # With the engines extra, convert now so the onnxruntime/openvino engines start offline.
        from .onnx_export import ensure_onnx

        print(ensure_onnx(paths))
    return 0
