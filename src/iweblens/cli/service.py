"""The service's own subcommands: ``serve``, ``detect`` and ``fetch-model``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iweblens.cli import check_path, unreadable
from iweblens.config import Settings, SettingsError, env_name

if TYPE_CHECKING:
    from iweblens.models.store import ModelPaths


def _ensure_model(settings: Settings) -> ModelPaths:
    """The verified model files, fetched if missing; exits with the reason if they are bad.

    Reports on stderr: bars on a terminal, plain lines in logs (CI, docker build, a pod's log).
    """
    from iweblens.models.store import ModelIntegrityError, ModelStore

    try:
        return ModelStore(settings.model_dir).ensure()
    except ModelIntegrityError as error:
        raise SystemExit(f"iweblens: {error}") from None


def _check_engine(settings: Settings, paths: ModelPaths | None = None) -> None:
    """Refuse an engine that cannot run now, rather than in an inference thread (``/readyz``
    failing for ever): unknown, a package of its extra missing, or (with the model files'
    ``paths``) unable to take the input size. Checked, not loaded: start-up stays fast."""
    from iweblens.inference.engines import (
        EngineUnavailableError,
        UnknownEngineError,
        check_engine,
        check_input_size,
    )

    try:
        check_engine(settings.engine)
        if paths is not None:
            check_input_size(settings.engine, settings.input_size, paths)
    except UnknownEngineError as error:
        raise SystemExit(f"iweblens: {env_name('engine')}: {error}") from None
    except EngineUnavailableError as error:
        raise SystemExit(f"iweblens: {env_name('engine')}={settings.engine}: {error}") from None


def run_serve(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.allocator import exec_with_huge_pages

    # First, before the imports below: the service takes this process over anyway.
    exec_with_huge_pages()

    from iweblens.inference.sizing import InsufficientMemoryError
    from iweblens.service.auth import ApiKeyError
    from iweblens.service.server import serve

    overrides = {
        name: value
        for name in ("host", "port", "threads")
        if (value := getattr(args, name)) is not None
    }
    settings = dataclasses.replace(settings, **overrides)  # in range: checked when parsed
    _check_engine(settings)
    _check_engine(settings, _ensure_model(settings))
    try:
        serve(settings)
    except (InsufficientMemoryError, ApiKeyError) as error:
        # Exits non-zero with the reason (in the pod's log), rather than being OOM-killed while
        # loading or serving 401s to every client, in a loop.
        raise SystemExit(f"iweblens: {error}") from None
    return 0


def run_detect(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.detection import ImageDecodeError
    from iweblens.inference.detector import Detector
    from iweblens.service.wire import DetectionRequest, Flavour, render_detections

    # Every path is checked before the model loads: a typo costs no start-up.
    images = [check_path(image) for image in args.images]
    _check_engine(settings)
    paths = _ensure_model(settings)
    _check_engine(settings, paths)
    detector = Detector.from_settings(settings, paths)
    results = {}
    for image in images:
        try:
            data = image.read_bytes()
        except OSError as error:
            raise unreadable(image, error) from None
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


def run_fetch_model(args: argparse.Namespace, settings: Settings) -> int:
    paths = _ensure_model(settings)
    for path in (paths.cfg, paths.weights, paths.names):
        print(path)
    if find_spec("onnx"):
        # With the engines extra, convert now so the onnxruntime/openvino engines start offline.
        from iweblens.models.onnx_export import ensure_onnx

        print(ensure_onnx(paths, settings.input_size))
    return 0


def _setting(name: str) -> Callable[[str], int]:
    """The argparse type of the whole-number setting ``name``: the settings' own range check,
    reported as the option's (their message names the environment variable)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        change: dict[str, Any] = {name: value}
        try:
            dataclasses.replace(Settings(), **change)
        except SettingsError:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range") from None
        return value

    return convert


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", help=f"address to bind ({env_name('host')}, default {Settings.host})"
    )
    parser.add_argument(
        "--port",
        type=_setting("port"),
        help=f"port to bind ({env_name('port')}, default {Settings.port})",
    )
    parser.add_argument(
        "--threads",
        type=_setting("threads"),
        help=f"request threads ({env_name('threads')}, default {Settings.threads})",
    )
    parser.set_defaults(run=run_serve)


def _detect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    parser.set_defaults(run=run_detect)


def _fetch_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(run=run_fetch_model)


ARGUMENTS = {
    "serve": _serve_arguments,
    "detect": _detect_arguments,
    "fetch-model": _fetch_model_arguments,
}
