"""A bad path on the command line gets one line on stderr and exit status 2, never a traceback,
and before any model is loaded or request sent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def iweblens(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iweblens.cli", *args],
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert done.stdout == ""
    return lines[0]


@pytest.mark.parametrize(
    ("name", "problem"),
    [("absent.jpg", "no such file"), (".", "is a folder"), ("image.jpg/inside", "no such file")],
)
def test_detect_on_a_bad_path(tmp_path: Path, photos: list[Path], name: str, problem: str) -> None:
    (tmp_path / "image.jpg").write_bytes(photos[0].read_bytes())
    target = tmp_path / name
    line = one_line(iweblens("detect", str(tmp_path / "image.jpg"), str(target)))
    assert line.startswith(f"iweblens detect: {target}: {problem}"), line


def test_detect_on_a_file_that_cannot_be_read() -> None:
    # A regular file to stat, whose read fails (EIO at offset 0) even for root: found when it is
    # read, after the model files' verification lines.
    done = iweblens("detect", "/proc/self/mem")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("iweblens detect: /proc/self/mem: cannot be read"), line


@pytest.mark.parametrize(
    ("name", "problem"), [("absent", "no such folder"), ("image.jpg", "is not a folder")]
)
def test_client_on_a_bad_folder(
    tmp_path: Path, photos: list[Path], name: str, problem: str
) -> None:
    (tmp_path / "image.jpg").write_bytes(photos[0].read_bytes())
    target = tmp_path / name
    line = one_line(iweblens("client", str(target), "http://127.0.0.1:9/api/object_detection", "1"))
    assert line.startswith(f"iweblens client: {target}: {problem}"), line
