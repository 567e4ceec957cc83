"""The service's own subcommands: ``serve``, ``detect`` and ``fetch-model``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iweblens.cli import check_path, unreadable
from iweblens.config import Settings, SettingsError, env_name

if TYPE_CHECKING:
    from iweblens.models.repository import DarknetModel, ModelRepository, Served
    from iweblens.models.store import ModelPaths


def _repository(settings: Settings) -> ModelRepository:
    """The model repository, or exit 1 with the reason (a broken user model folder, an
    ``IWEBLENS_MODELS`` naming no real model)."""
    from iweblens.models.repository import ModelConfigError, ModelRepository

    try:
        return ModelRepository.from_settings(settings)
    except ModelConfigError as error:
        raise SystemExit(f"iweblens: {error}") from None


def _ensure_model(model: DarknetModel, cache: Path) -> ModelPaths:
    """A model's verified files, a bundled one's fetched if missing; exits with the reason if
    they are bad.

    Reports on stderr: bars on a terminal, plain lines in logs (CI, docker build, a pod's log).
    """
    from iweblens.models.store import ModelIntegrityError, ModelStore

    if model.pinned is None:
        return model.verified_paths()
    try:
        return ModelStore.in_cache(cache, model.pinned).ensure()
    except ModelIntegrityError as error:
        raise SystemExit(f"iweblens: {error}") from None


def _ensure_models(settings: Settings, names: Sequence[str] | None = None) -> ModelRepository:
    """The repository, with the files of ``names`` (default: the models this server loads)
    verified and fetched, and each model's engine checked; exits with the reason otherwise."""
    from iweblens.models.repository import ModelConfigError, UnknownModelError, View

    fetched = _repository(settings)
    unlabelled = False  # a bundled model not fetched yet: its labels are read once it is
    for asked in names or fetched.loaded:
        found = fetched.models.get(fetched.canonical(asked))
        if found is None:
            raise SystemExit(f"iweblens: {UnknownModelError(asked, fetched.names())}")
        model = fetched.real(fetched.base_of(found)) if isinstance(found, View) else found
        unlabelled |= model.labels is None
        paths = _ensure_model(model, settings.model_dir)
        _check_engine(settings, paths, model.engine, model.input_size, model.name)
    # Read again only for the labels of what was just fetched: a scan hashes every user model.
    repository = _repository(settings) if unlabelled else fetched
    if names:
        return repository  # what IWEBLENS_MODELS loads may not be fetched: it is not asked for
    try:
        repository.served()
    except ModelConfigError as error:
        raise SystemExit(f"iweblens: {error}") from None
    return repository


def _check_engine(
    settings: Settings,
    paths: ModelPaths | None = None,
    engine: str | None = None,
    input_size: int | None = None,
    model: str | None = None,
) -> None:
    """Refuse an engine that cannot run now, rather than in an inference thread (``/readyz``
    failing for ever): unknown, a package of its extra missing, or (with the model files'
    ``paths``) unable to take the input size. Checked, not loaded: start-up stays fast.
    ``engine``/``input_size``: ``model``'s own (None: the server's)."""
    from iweblens.inference.engines import (
        EngineUnavailableError,
        UnknownEngineError,
        check_engine,
        check_input_size,
    )

    where = env_name("engine") if engine is None else f"model {model}: engine"
    engine = engine or settings.engine
    try:
        check_engine(engine)
        if paths is not None:
            check_input_size(engine, input_size or settings.input_size, paths)
    except UnknownEngineError as error:
        raise SystemExit(f"iweblens: {where}: {error}") from None
    except EngineUnavailableError as error:
        raise SystemExit(f"iweblens: {where}={engine}: {error}") from None


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
    _ensure_models(settings)
    try:
        serve(settings)
    except (InsufficientMemoryError, ApiKeyError) as error:
        # Exits non-zero with the reason (in the pod's log), rather than being OOM-killed while
        # loading or serving 401s to every client, in a loop.
        raise SystemExit(f"iweblens: {error}") from None
    return 0


def run_detect(args: argparse.Namespace, settings: Settings) -> int:
    from iweblens.detection import DetectionParams, ImageDecodeError
    from iweblens.inference.detector import Detector
    from iweblens.service.wire import DetectionRequest, Flavour, render_detections

    # Every path is checked before the model loads: a typo costs no start-up.
    images = [check_path(image) for image in args.images]
    _check_engine(settings)
    repository = _ensure_models(settings, [args.model] if args.model else None)
    served = _served(repository, args.model)
    model = served.model
    paths = model.verified_paths()
    detector = Detector.from_settings(settings, paths, model.engine, input_size=model.input_size)
    params = DetectionParams(relabel=served.relabel)
    results = {}
    for image in images:
        try:
            data = image.read_bytes()
        except OSError as error:
            raise unreadable(image, error) from None
        try:
            detections = detector.run(data, params).detections
        except ImageDecodeError as error:
            print(f"iweblens: {image}: {error}", file=sys.stderr)
            return 1
        results[str(image)] = render_detections(
            DetectionRequest(data, Flavour.MULTIPART), detections
        )
    output = next(iter(results.values())) if len(results) == 1 else results
    print(json.dumps(output, indent=2))
    return 0


def _served(repository: ModelRepository, name: str | None) -> Served:
    """What answers ``name`` (None: the default model; else one ``_ensure_models`` fetched),
    whatever ``IWEBLENS_MODELS`` says; exits with the reason if it cannot be served."""
    from iweblens.models.repository import ModelConfigError, ModelRepository, View

    if name is not None:
        model = repository.models[repository.canonical(name)]
        real = repository.base_of(model) if isinstance(model, View) else model.name
        # Only the model asked for is loaded: the others' files need not be fetched.
        repository = ModelRepository(repository.models.values(), (real,))
    try:
        return repository.resolve(name)
    except ModelConfigError as error:
        raise SystemExit(f"iweblens: {error}") from None


def run_fetch_model(args: argparse.Namespace, settings: Settings) -> int:
    repository = _ensure_models(settings, args.model or None)
    for name in args.model or repository.loaded:
        if name not in repository.real_names():
            continue  # a view: its model's files are the ones fetched
        paths = repository.real(name).verified_paths()
        for path in (paths.cfg, paths.weights, paths.names):
            print(path)
        if find_spec("onnx"):
            # With the engines extra, convert now so the onnxruntime/openvino engines start
            # offline.
            from iweblens.models.onnx_export import ensure_onnx

            model = repository.real(name)
            print(ensure_onnx(paths, model.input_size or settings.input_size))
    return 0


def run_models(args: argparse.Namespace, settings: Settings) -> int:
    """Print every model: name, kind, loaded by this configuration, labels, size, engine."""
    from iweblens.models.repository import DarknetModel, ModelConfigError

    repository = _repository(settings)
    served = None
    # Which views a loaded model answers, and with what labels, is known once its files are.
    if all(repository.real(name).labels for name in repository.loaded):
        try:
            served = repository.served()
        except ModelConfigError as error:
            raise SystemExit(f"iweblens: {error}") from None
    rows = []
    for name, model in repository.models.items():
        answers = name in served if served is not None else _over_loaded(repository, name)
        loaded = "loaded" if name in repository.loaded or answers else "-"
        if isinstance(model, DarknetModel):
            size = model.input_size or settings.input_size
            labels = f"{len(model.labels)} labels" if model.labels else "not fetched"
            where = "bundled" if model.pinned else str(model.folder)
            detail = f"{size} px, {model.engine or settings.engine}, {labels}, {where}"
        else:
            shown = served[name].labels if served is not None and name in served else model.labels
            detail = f"over {repository.base_of(model)}: {', '.join(shown)}"
        rows.append((name, model.kind, loaded, detail))
    if args.json:
        keys = ("name", "kind", "loaded", "detail")
        print(json.dumps([dict(zip(keys, row, strict=True)) for row in rows], indent=2))
        return 0
    width = max(len(row[0]) for row in rows)
    for name, kind, loaded, detail in rows:
        print(f"{name:<{width}}  {kind:<7}  {loaded:<6}  {detail}")
    return 0


def _over_loaded(repository: ModelRepository, name: str) -> bool:
    from iweblens.models.repository import View

    model = repository.models[name]
    return isinstance(model, View) and repository.base_of(model) in repository.loaded


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
    parser.add_argument(
        "--model", help="the model or view to detect with (`iweblens models`; default: the default)"
    )
    parser.set_defaults(run=run_detect)


def _fetch_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help=f"a real model to fetch; repeatable (default: those {env_name('models')} names)",
    )
    parser.set_defaults(run=run_fetch_model)


def _models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=run_models)


ARGUMENTS = {
    "serve": _serve_arguments,
    "detect": _detect_arguments,
    "fetch-model": _fetch_model_arguments,
    "models": _models_arguments,
}
