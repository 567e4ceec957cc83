"""The ``iweblens`` command line: one subcommand per job, each defined next to the code it runs."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module exposes ``add_command(subparsers)``, which registers a subparser whose ``run``
# default is called with the parsed arguments and returns the exit status.
COMMAND_MODULES = (
    "iweblens.commands",
    "iweblens.client",
    "iweblens.plot",
    "iweblens.report",
    "iweblens.experiment",
    "iweblens.bench",
    "iweblens.int8",
    "iweblens.soak",
    "iweblens.stress",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iweblens",
        description="YOLOv3-tiny object detection as a web service, and the tools to measure it.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``iweblens`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
