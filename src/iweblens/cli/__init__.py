"""The ``iweblens`` command line: argparse only.

Every subcommand is listed here with its one-line help; its arguments are defined by a module of
this package, imported only when that subcommand is the one being run (or when the full parser is
asked for), and its ``run`` imports the job itself. So ``iweblens serve`` never imports the
study, load or bench kits, nor matplotlib or reportlab.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Collection, Sequence

__all__ = ["COMMANDS", "build_parser", "main"]

# name -> (module defining its arguments, one-line help), in the order ``--help`` lists them. Each
# module's ``configure(name, parser)`` adds the arguments and a ``run`` default that is called
# with the parsed arguments and returns the exit status.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("iweblens.cli.service", "run the detection service (uvicorn)"),
    "detect": ("iweblens.cli.service", "detect objects in images, without a server"),
    "fetch-model": ("iweblens.cli.service", "fetch and verify the model files"),
    "client": (
        "iweblens.cli.load",
        "closed-loop load client, wire-compatible with the reference iWebLens client",
    ),
    "plot": (
        "iweblens.cli.study",
        "draw the pods x threads figure from a results CSV (PNG and SVG)",
    ),
    "report": (
        "iweblens.cli.study",
        "write the study's PDF report (two pages max) from a results CSV",
    ),
    "experiment": (
        "iweblens.cli.study",
        "run the pods x threads study and append one CSV row per run",
    ),
    "bench": (
        "iweblens.cli.bench",
        "measure the floor, the service and the naive baseline under 0.5 CPU",
    ),
    "bench-letterbox": (
        "iweblens.cli.bench",
        "CPU time and page faults per image of each letterbox implementation",
    ),
    "quantize": (
        "iweblens.cli.bench",
        "build the INT8 model for IWEBLENS_ENGINE=openvino-int8 from calibration photos",
    ),
    "soak": (
        "iweblens.cli.bench",
        "long closed-loop load on one CPU-limited replica: errors, memory, fds",
    ),
    "stress": (
        "iweblens.cli.bench",
        "attack one imitated pod (its limits, the kubelet's probes): issue 12's outcomes",
    ),
}


def build_parser(configured: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand; those in ``configured`` (all when None) take arguments."""
    parser = argparse.ArgumentParser(
        prog="iweblens",
        description="YOLOv3-tiny object detection as a web service, and the tools to measure it.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text)
        if configured is None or name in configured:
            importlib.import_module(module).configure(name, subparser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``iweblens`` console script."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    # The top-level parser takes no option but -h, so the first other word names the command.
    command = next((word for word in arguments if not word.startswith("-")), None)
    args = build_parser({command} if command else set()).parse_args(arguments)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
