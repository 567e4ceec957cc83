"""The ``iweblens`` command line: argparse only.

Every subcommand is listed here with its one-line help; its arguments are defined by a module of
this package, imported only when that subcommand is the one being run (or when the full parser is
asked for), and its ``run`` imports the job itself. So ``iweblens serve`` never imports the
study, load or bench kits, nor matplotlib or reportlab.
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import NamedTuple

from iweblens.config import Settings, SettingsError, env_name

__all__ = [
    "COMMANDS",
    "BadPath",
    "Command",
    "build_parser",
    "check_path",
    "main",
    "positive_float",
    "positive_int",
]


class Command(NamedTuple):
    module: str  # its ``ARGUMENTS[name](parser)`` defines the arguments
    help: str
    extra: str | None = None  # the optional dependencies (pyproject.toml) it needs


# In the order ``--help`` lists them. Each module's ``ARGUMENTS[name](parser)`` adds the
# arguments and a ``run`` default, called with the parsed arguments and the settings, that
# returns the exit status.
COMMANDS: dict[str, Command] = {
    "serve": Command("iweblens.cli.service", "run the detection service (uvicorn)"),
    "detect": Command("iweblens.cli.service", "detect objects in images, without a server"),
    "fetch-model": Command("iweblens.cli.service", "fetch and verify the model files"),
    "models": Command("iweblens.cli.service", "list the models and views, and which load"),
    "client": Command(
        "iweblens.cli.load",
        "closed-loop load client, wire-compatible with the reference iWebLens client",
        "load",
    ),
    "plot": Command(
        "iweblens.cli.study",
        "draw the pods x threads figure from a results CSV (PNG and SVG)",
        "study",
    ),
    "report": Command(
        "iweblens.cli.study",
        "write the study's PDF report (two pages max) from a results CSV",
        "study",
    ),
    "experiment": Command(
        "iweblens.cli.study",
        "run the pods x threads study and append one CSV row per run",
        "study",
    ),
    "bench": Command(
        "iweblens.cli.bench",
        "measure the floor, the service and the naive baseline under 0.5 CPU",
        "bench",
    ),
    "bench-letterbox": Command(
        "iweblens.cli.bench",
        "CPU time and page faults per image of each letterbox implementation",
    ),
    "quantize": Command(
        "iweblens.cli.bench",
        f"build the INT8 model for {env_name('engine')}=openvino-int8 from calibration photos",
    ),
    "soak": Command(
        "iweblens.cli.bench",
        "long closed-loop load on one CPU-limited replica: errors, memory, fds",
        "bench",
    ),
    "bench-decode": Command(
        "iweblens.cli.bench",
        "size-aware JPEG decoding: agreement at 12/24 MP, CPU ms, peak memory",
    ),
    "stress": Command(
        "iweblens.cli.bench",
        "attack one imitated pod (its limits, the kubelet's probes): issue 12's outcomes",
        "bench",
    ),
    "frigate": Command(
        "iweblens.cli.bench",
        "replay Frigate's DeepStack detector (Poisson arrivals, 0.1 s timeout) on one pod",
        "bench",
    ),
}

# The third-party packages of the engine extras, by import name: what a command without an
# extra of its own (``quantize``, ``fetch-model``) may be missing.
EXTRA_OF_MODULE = {
    "onnx": "engines",
    "onnxruntime": "engines",
    "openvino": "engines",
    "nncf": "int8",
}


class BadPath(Exception):
    """A path given on the command line that the command cannot use: one line, exit status 2."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


def check_path(path: Path, *, folder: bool = False) -> Path:
    """``path`` when it is a file (``folder``: a folder), else ``BadPath`` saying what it is."""
    if folder and not path.is_dir():
        raise BadPath(path, "is not a folder" if path.exists() else "no such folder")
    if not folder and not path.is_file():
        raise BadPath(path, "is a folder, not a file" if path.is_dir() else "no such file")
    return path


def unreadable(path: Path, error: OSError) -> BadPath:
    """The ``BadPath`` of a file or folder whose reading failed with ``error``."""
    return BadPath(path, f"cannot be read: {error.strerror or error}")


def positive_int(text: str) -> int:
    """An argument's value as an int of at least 1; ``argparse.ArgumentTypeError`` saying why
    not (argparse's own message would name this function instead)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a positive whole number")
    return value


def positive_float(text: str) -> float:
    """An argument's value as a finite float above 0; ``argparse.ArgumentTypeError`` saying why
    not (``float`` also reads "nan" and "inf", which no duration or CPU limit is)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not positive")
    return value


def build_parser(configured: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand; those in ``configured`` (all when None) take arguments."""
    parser = argparse.ArgumentParser(
        prog="iweblens",
        description="YOLOv3-tiny object detection as a web service, and the tools to measure it.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=command.help)
        if configured is None or name in configured:
            importlib.import_module(command.module).ARGUMENTS[name](subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``iweblens`` console script."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    # The top-level parser takes no option but -h, so the first other word names the command.
    command = next((word for word in arguments if not word.startswith("-")), None)
    try:
        return _run(arguments, command)
    except BadPath as error:
        print(f"iweblens {command}: {error}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as error:
        # Only a missing third-party package: a module of ours missing is a broken install.
        missing = (error.name or "").partition(".")[0]
        needs = COMMANDS[command].extra if command in COMMANDS else None
        extra = EXTRA_OF_MODULE.get(missing) or (needs if missing != "iweblens" else None)
        if extra is None:
            raise
        print(
            f"iweblens {command}: {error.name} is missing; install the {extra!r} extra: "
            f"pip install 'iweblens[{extra}]'",
            file=sys.stderr,
        )
        return 2


def _run(arguments: list[str], command: str | None) -> int:
    args = build_parser({command} if command else set()).parse_args(arguments)
    try:
        # The one place the environment is read; everything below is handed these settings.
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"iweblens: {error}", file=sys.stderr)
        return 2
    try:
        return int(args.run(args, settings) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
