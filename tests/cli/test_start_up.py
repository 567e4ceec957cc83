"""``iweblens`` refuses bad settings at start-up, before any model is loaded or port opened."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from uvicorn.config import STARTUP_FAILURE

from iweblens.inference.engines import ENGINES


def iweblens(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iweblens.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_serve_exits_at_once_on_an_unknown_engine_and_lists_the_known_ones() -> None:
    done = iweblens("serve", "--host", "127.0.0.1", "--port", "1", env={"IWEBLENS_ENGINE": "yolo"})
    assert done.returncode != 0
    assert "unknown engine 'yolo'" in done.stderr
    assert all(name in done.stderr for name in ENGINES)


def test_a_malformed_variable_stops_the_command_with_its_name() -> None:
    done = iweblens("fetch-model", env={"IWEBLENS_PORT": "five thousand"})
    assert done.returncode == 2
    assert done.stderr.strip() == "iweblens: IWEBLENS_PORT='five thousand' is not a whole number"


def test_a_command_whose_extra_is_missing_names_the_extra_to_install() -> None:
    # As on an install without the `study` extra: matplotlib cannot be imported.
    code = (
        "import sys; sys.modules['matplotlib'] = None; from iweblens.cli import main; "
        "sys.exit(main(['plot', 'results.csv']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 2
    assert "pip install 'iweblens[study]'" in done.stderr


def refusal(done: subprocess.CompletedProcess[str]) -> str:
    """The line a refused command ended on: exit status non-zero, no traceback (the lines
    before it are the model files' verification, as at every start)."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip().splitlines()[-1]


def test_serve_refuses_a_non_ascii_api_key_naming_it_by_position(tmp_path: Path) -> None:
    secret = tmp_path / "api-keys"
    secret.write_text("ascii\ncl\u00e9\n", encoding="utf-8")
    done = iweblens(
        "serve", "--host", "127.0.0.1", "--port", "1", env={"IWEBLENS_API_KEYS_FILE": str(secret)}
    )
    line = refusal(done)
    assert line.startswith(f"iweblens: IWEBLENS_API_KEYS_FILE={secret}: key 2 is not ASCII")
    assert "cl\u00e9" not in line


def without_package(tmp_path: Path, name: str) -> dict[str, str]:
    """The environment of a child that cannot import ``name``, as an install without its extra."""
    (tmp_path / "sitecustomize.py").write_text(f"import sys\nsys.modules[{name!r}] = None\n")
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}


def serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``iweblens serve`` that must refuse to start: a server that starts fails the test."""
    return iweblens("serve", "--host", "127.0.0.1", "--port", "0", env=env, timeout=60)


@pytest.mark.parametrize(
    ("engine", "package", "extra"),
    [("onnxruntime", "onnxruntime", "engines"), ("openvino", "openvino", "openvino")],
)
def test_serve_stops_when_the_engines_package_is_missing_naming_the_extra(
    tmp_path: Path, engine: str, package: str, extra: str
) -> None:
    env = {**without_package(tmp_path, package), "IWEBLENS_ENGINE": engine}
    line = refusal(serve(env))
    assert line.startswith(f"iweblens: IWEBLENS_ENGINE={engine}: "), line
    assert (
        f"needs {package}, which is not installed" in line
        and f"pip install 'iweblens[{extra}]'" in line
    )


def test_detect_stops_when_the_engines_package_is_missing(tmp_path: Path) -> None:
    env = {**without_package(tmp_path, "onnxruntime"), "IWEBLENS_ENGINE": "onnxruntime"}
    photo = next((Path(__file__).parents[1] / "images").glob("*.jpg"))
    done = iweblens("detect", str(photo), env=env)
    assert done.returncode != 0 and done.stdout == ""
    assert "pip install 'iweblens[engines]'" in refusal(done)


def test_serve_stops_when_the_engine_cannot_take_the_input_size() -> None:
    """The INT8 model is quantized at 416 (the float ONNX engines convert at any size)."""
    line = refusal(serve({"IWEBLENS_ENGINE": "openvino-int8", "IWEBLENS_INPUT_SIZE": "320"}))
    assert line.startswith("iweblens: IWEBLENS_ENGINE=openvino-int8: "), line
    assert "416" in line and "IWEBLENS_INPUT_SIZE=320" in line


def test_serve_on_a_port_already_taken_exits_with_uvicorns_status_and_reason() -> None:
    """The model is still loading in a thread when uvicorn cannot listen: the process must still
    exit with uvicorn's status and message, not abort in the C++ runtime (SIGABRT)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = iweblens("serve", "--host", "127.0.0.1", "--port", str(port), env={})
    assert done.returncode == STARTUP_FAILURE, done.stderr[-2000:]
    assert "address already in use" in done.stderr.lower()
    assert "terminate called" not in done.stderr
