"""The ``iweblens`` command line's argument handling: every subcommand's help, the refusal of a
missing or malformed argument (exit status 2, one error line, no traceback), and the extra a
subcommand needs named when its package is missing.

Help and refusals run in this process (``iweblens.cli.main``, or only its parser where a value
wrongly taken would run a command); a child process only where the real exit status and stderr
are the point, or where a package must be missing from the start.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from iweblens.cli import COMMANDS, build_parser, main
from iweblens.inference.engines import ENGINES


def flat(text: str) -> str:
    """``text`` with argparse's line wrapping undone."""
    return " ".join(text.split())


def exit_status(arguments: list[str]) -> int:
    """The status ``iweblens ARGUMENTS`` ends with, when argparse ends it (help or refusal)."""
    with pytest.raises(SystemExit) as stopped:
        main(arguments)
    assert isinstance(stopped.value.code, int)
    return stopped.value.code


def own_parser(name: str) -> argparse.ArgumentParser:
    """A parser holding exactly the arguments the subcommand ``name`` defines."""
    parser = argparse.ArgumentParser(prog=f"iweblens {name}")
    importlib.import_module(COMMANDS[name].module).ARGUMENTS[name](parser)
    return parser


def test_the_top_level_help_lists_every_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_status(["--help"]) == 0
    listed = flat(capsys.readouterr().out)
    for name, command in COMMANDS.items():
        assert f"{name} {flat(command.help)}" in listed


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_subcommand_help_exits_0_and_names_its_options(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The help is formatted from every argument's help text: a stray '%' or a default that
    # cannot be shown breaks it, and only when someone asks for it.
    assert exit_status([name, "--help"]) == 0
    shown = capsys.readouterr()
    assert shown.err == ""
    assert shown.out.startswith(f"usage: iweblens {name} ")
    arguments = [action for action in own_parser(name)._actions if action.dest != "help"]
    assert arguments or name == "fetch-model"
    for action in arguments:
        # A positional shows its metavar, else its choices, else its name.
        words = action.option_strings or (
            [str(action.metavar)] if action.metavar else list(action.choices or [action.dest])
        )
        for word in words:
            assert word in shown.out, f"{name} --help does not name {word}"


def refusal(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line argparse ends a refused command with (after its usage): status 2,
    nothing on stdout, no traceback.

    Parsed only, by the parser of every subcommand: were the value taken, the test fails rather
    than run the command (start a pod, or re-execute this process as ``serve`` does).
    """
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(arguments)
    assert stopped.value.code == 2
    shown = capsys.readouterr()
    assert shown.out == ""
    lines = shown.err.strip().splitlines()
    assert lines[0].startswith("usage: iweblens") and "Traceback" not in shown.err
    assert [line for line in lines if ": error: " in line] == [lines[-1]], shown.err
    return lines[-1]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ([], "iweblens: error: the following arguments are required: COMMAND"),
        (["detect"], "iweblens detect: error: the following arguments are required: IMAGE"),
        (["quantize"], "iweblens quantize: error: the following arguments are required: --images"),
        (
            ["client", "images"],
            "iweblens client: error: the following arguments are required: endpoint, num_threads",
        ),
        (
            ["report", "results.csv", "--name", "A"],
            "iweblens report: error: the following arguments are required: --tutor, --login, "
            "--student-id",
        ),
        (["soak"], "iweblens soak: error: the following arguments are required: images"),
        (["stress"], "iweblens stress: error: the following arguments are required: images"),
        (["plot"], "iweblens plot: error: the following arguments are required: results"),
    ],
)
def test_a_missing_argument_is_named(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert refusal(arguments, capsys) == message


URL = "http://127.0.0.1:9/api/object_detection"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["bogus"], "argument COMMAND: invalid choice: 'bogus'"),
        (["bench", "--count", "abc"], "argument --count: 'abc' is not a whole number"),
        (["serve", "--port", "abc"], "argument --port: 'abc' is not a whole number"),
        (["serve", "--port", "70000"], "argument --port: '70000' is out of range"),
        (["serve", "--threads", "0"], "argument --threads: '0' is out of range"),
        (["bench", "--rounds", "0"], "argument --rounds: '0': give a positive whole number"),
        (["bench", "--clients", "-4"], "argument --clients: '-4': give a positive whole number"),
        (["bench-letterbox", "--count", "0"], "argument --count: '0': give a positive whole"),
        (["bench-decode", "--sizes", "12", "0"], "argument --sizes: '0' is not positive"),
        (["quantize", "--images", "x", "--count", "0"], "argument --count: '0': give a positive"),
        (["soak", "images", "--duration", "-5"], "argument --duration: '-5' is not positive"),
        (["soak", "images", "--cpus", "0"], "argument --cpus: '0' is not positive"),
        (["frigate", "--rate", "0"], "argument --rate: '0' is not positive"),
        (["frigate", "--requests", "0"], "argument --requests: '0': give a positive whole"),
        (["client", "images", URL, "abc"], "argument num_threads: 'abc' is not a whole number"),
        (["client", "images", URL, "0"], "argument num_threads: '0': give a positive whole number"),
        (["experiment", "--pods", "0"], "argument --pods: '0': give a positive whole number"),
        (["experiment", "--threads", "1,x"], "argument --threads: 'x' is not a whole number"),
        (["experiment", "--repeats", "2.5"], "argument --repeats: '2.5' is not a whole number"),
        (["experiment", "--timeout", "abc"], "argument --timeout: 'abc' is not a number"),
        (["experiment", "--timeout", "0"], "argument --timeout: '0' is not positive"),
        (["experiment", "--timeout", "nan"], "argument --timeout: 'nan' is not a finite number"),
        (
            ["experiment", "--cpu-limit", "inf"],
            "argument --cpu-limit: 'inf' is not a finite number",
        ),
        (["experiment", "--engine", "yolo"], "argument --engine: invalid choice: 'yolo'"),
        (["experiment", "--backend", "nomad"], "argument --backend: invalid choice: 'nomad'"),
        (["client", "images", URL, "1", "--protocol", "xml"], "argument --protocol: invalid"),
        (["stress", "images", "--env", "FOO"], "argument --env: 'FOO' is not NAME=VALUE"),
        (["stress", "images", "--env", "=x"], "argument --env: '=x' is not NAME=VALUE"),
        (["stress", "images", "--attack", "none"], "argument --attack: invalid choice: 'none'"),
        (["frigate", "--profile", "fast:FOO"], "argument --profile: 'FOO' is not NAME=VALUE"),
        (["frigate", "--profile", ":A=1"], "argument --profile: ':A=1' names no profile"),
        (["frigate", "--rate", "fast"], "argument --rate: 'fast' is not a number"),
        (["bench-decode", "all"], "argument parts: invalid choice: 'all'"),
        (["report", "r.csv", "--paper", "a5"], "argument --paper: invalid choice: 'a5'"),
    ],
)
def test_a_bad_value_is_refused_naming_the_argument_and_the_value(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    command = f"iweblens {arguments[0]}" if arguments[0] in COMMANDS else "iweblens"
    assert refusal(arguments, capsys).startswith(f"{command}: error: {message}")


def test_an_unknown_engine_is_refused_listing_the_known_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = refusal(["experiment", "--engine", "yolo"], capsys)
    assert all(repr(name) in line for name in ENGINES), line


def test_a_valid_engine_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    # Parsed, then refused by the run itself (the folder has no images): the value passed.
    assert main(["experiment", "--engine", "openvino-int8", "--images", "/nonexistent"]) == 2
    assert capsys.readouterr().err.strip() == "no .jpg, .jpeg or .png images in /nonexistent"


def iweblens(*arguments: str, missing: str | None = None) -> subprocess.CompletedProcess[str]:
    """``iweblens ARGUMENTS`` in a child process; ``missing``: a package it cannot import, as on
    an install without the extra that brings it."""
    hide = f"sys.modules[{missing!r}] = None; " if missing else ""
    code = f"import sys; {hide}from iweblens.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *arguments],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


@pytest.mark.parametrize(
    "arguments",
    [
        ["client", "images", URL, "many"],
        ["experiment", "--engine", "yolo", "--images", "/nonexistent"],
        ["serve", "--threads", "0"],
        [],
    ],
)
def test_the_process_exits_2_with_its_usage_and_one_error_line(arguments: list[str]) -> None:
    done = iweblens(*arguments)
    assert done.returncode == 2 and done.stdout == ""
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("usage: iweblens")
    assert [line for line in lines if ": error: " in line] == [lines[-1]]


@pytest.mark.parametrize(
    ("arguments", "package", "extra"),
    [
        # No images where a run needs none to get to the import: should the package ever be
        # found, the command stops at once rather than run a study, benchmark or pod.
        (["client", "/nonexistent", URL, "1"], "requests", "load"),
        (["experiment", "--images", "/nonexistent"], "yaml", "study"),
        (["report", "r.csv", "--name", "a", "--tutor", "b", "--login", "c", "--student-id", "d"],
         "reportlab", "study"),
        (["bench", "--images", "/nonexistent"], "requests", "bench"),
        (["soak", "/nonexistent"], "yaml", "bench"),
        (["stress", "/nonexistent"], "yaml", "bench"),
        (["frigate", "--images", "/nonexistent"], "requests", "bench"),
        # No extra of its own: the package's extra is named (EXTRA_OF_MODULE).
        (["quantize", "--images", "{images}", "--count", "2"], "nncf", "int8"),
    ],
)  # fmt: skip
def test_a_missing_extra_is_named_with_its_install_command(
    arguments: list[str], package: str, extra: str, photos: list[Path]
) -> None:
    images = str(photos[0].parent)
    done = iweblens(*(word.format(images=images) for word in arguments), missing=package)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"iweblens {arguments[0]}: {package}"), line
    assert line.endswith(
        f"is missing; install the {extra!r} extra: pip install 'iweblens[{extra}]'"
    )


def test_a_missing_module_of_ours_is_a_broken_install_not_a_missing_extra() -> None:
    done = iweblens("plot", "results.csv", missing="iweblens.study.plot")
    assert done.returncode == 1
    assert "ModuleNotFoundError" in done.stderr and "pip install" not in done.stderr
