"""The newcomer's scripts: the Python check before ``make install``, ``make clean``, and the
address ``make run`` binds."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_helpers import DOCKER_ENGINE_SCRIPT, REPO_DIR, Docker, makefile_variable

CHECK_PYTHON = REPO_DIR / "scripts" / "check-python.sh"
CLEAN = REPO_DIR / "scripts" / "clean.sh"


def debian_image() -> str:
    """The Debian 12 root that scripts/docker-engine.sh debootstraps for its stand-in base image."""
    match = re.search(r'^ROOTFS_IMAGE="([^"]+)"$', DOCKER_ENGINE_SCRIPT.read_text(), re.MULTILINE)
    assert match, "scripts/docker-engine.sh names no ROOTFS_IMAGE"
    return match.group(1)


@pytest.mark.docker
def test_a_debian_python_without_venv_is_told_the_one_command_that_fixes_it(
    docker: Docker, image: str
) -> None:
    # `image` built the base image, and with it the Debian root (python3, python3-venv).
    debian = debian_image()
    if not docker("image", "ls", "--quiet", debian):
        pytest.skip(f"{debian} is absent: the base image was pulled, not debootstrapped")
    script = "/check-python.sh"
    output = docker(
        "run", "--rm", "--network", "none", "--volume", f"{CHECK_PYTHON}:{script}:ro", debian,
        "sh", "-c",
        f"sh {script} python3 && echo READY"
        " && dpkg --remove python3-pip python3-venv python3.11-venv >/dev/null 2>&1"
        f" && sh {script} python3 2>&1; echo exit=$?",
    )  # fmt: skip
    assert output.splitlines() == [
        "READY",
        "make: Python 3.11 has no ensurepip, so it cannot create the virtualenv.",
        "  run:  apt-get install python3.11-venv",
        "then run make again.",
        "exit=1",
    ]


def test_make_run_binds_the_address_the_readme_promises() -> None:
    readme = (REPO_DIR / "README.md").read_text()
    match = re.search(r"make run .*serves on http://localhost:(\d+)", readme)
    assert match, "the README's two commands no longer name the URL"
    assert int(match.group(1)) == int(makefile_variable("PORT"))
    # localhost is the loopback address make run binds (IPv4 first, for browsers and curl alike).
    assert makefile_variable("HOST") == "127.0.0.1"


def fake_checkout(root: Path) -> Path:
    """A checkout holding what the project creates, and a cache beside files that are not its."""
    checkout = root / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(CLEAN, checkout / "scripts")
    for created in (".venv/bin", "test-artifacts", "src/iweblens/__pycache__", "tests/__pycache__"):
        (checkout / created).mkdir(parents=True)
    (checkout / "src/iweblens/_letterbox.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\0")
    (checkout / ".venv/bin/python").write_bytes(b"\0" * 300_000)
    (checkout / "src/iweblens/store.py").write_text("kept")
    cache = root / "cache"
    for made in ("iweblens/models", "iweblens/docker/data-ci", "iweblens/podman/storage-ci"):
        (cache / made).mkdir(parents=True)
    (cache / "iweblens/models/yolov3-tiny.weights").write_bytes(b"\0" * 200_000)
    (cache / "someone-else").mkdir()
    return checkout


def run_clean(checkout: Path, cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(checkout / "scripts" / "clean.sh")],
        env={"PATH": "/usr/bin:/bin", "HOME": str(cache.parent), "XDG_CACHE_HOME": str(cache)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_clean_removes_what_the_project_made_and_says_how_much(tmp_path: Path) -> None:
    checkout = fake_checkout(tmp_path)
    cache = tmp_path / "cache"
    done = run_clean(checkout, cache)
    assert done.returncode == 0, done.stderr
    for removed in (".venv", "test-artifacts", "src/iweblens/__pycache__", "tests/__pycache__"):
        assert not (checkout / removed).exists()
    assert not list((checkout / "src").glob("**/*.so"))
    assert not (cache / "iweblens").exists()
    assert (checkout / "src/iweblens/store.py").read_text() == "kept"
    assert (cache / "someone-else").is_dir()
    assert re.search(r"make clean: freed \d", done.stderr.splitlines()[-1]), done.stderr


def test_make_clean_refuses_while_an_engine_uses_the_cache(tmp_path: Path) -> None:
    checkout = fake_checkout(tmp_path)
    cache = tmp_path / "cache"
    data_root = cache / "iweblens/docker/data-ci"
    # A process whose command line names the data-root, as dockerd's --data-root does.
    engine = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", f"--data-root={data_root}"]
    )
    try:
        done = run_clean(checkout, cache)
    finally:
        engine.kill()
        engine.wait()
    assert done.returncode == 1
    assert "is in use" in done.stderr
    assert data_root.is_dir() and (checkout / ".venv").is_dir()
