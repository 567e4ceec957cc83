"""Fixtures for the deployment checks: the manifests as data, the tools that validate them, and
one private Docker engine with the service image, shared by every container test of the session
(the image is built once; podman and Compose run that same image)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import (
    FIGURES,
    K8S_DIR,
    REPO_DIR,
    Docker,
    engine_script,
    load_one,
    makefile_variable,
)

ENGINE_START_TIMEOUT_S = 120
BASE_IMAGE_TIMEOUT_S = 900
BUILD_TIMEOUT_S = 1800


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("iWebLens container image")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def deployment() -> dict[str, Any]:
    return load_one(K8S_DIR / "deployment.yaml")


@pytest.fixture(scope="session")
def service() -> dict[str, Any]:
    return load_one(K8S_DIR / "service.yaml")


@pytest.fixture(scope="session")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one container per pod: the service and nothing else"
    return containers[0]


@pytest.fixture(scope="session")
def kubectl() -> str:
    """The project's own kubectl (``scripts/install-kubectl.sh``, run by ``make test``), never
    one that happens to be on PATH: a machine without one must not skip these checks."""
    installed = Path(sys.executable).with_name("kubectl")
    if not installed.is_file():
        pytest.fail(
            f"{installed} is missing: run `scripts/install-kubectl.sh {installed.parents[1]}` "
            "(`make test` does)"
        )
    return str(installed)


@pytest.fixture(scope="session")
def docker() -> Iterator[Docker]:
    """A running private engine; stopped afterwards if this fixture started it."""
    env = dict(os.environ)
    already_running = engine_script("status", env, 30).returncode == 0
    started = engine_script("start", env, ENGINE_START_TIMEOUT_S)
    if started.returncode != 0:
        pytest.skip(f"no Docker engine can run here: {started.stderr.strip()}")
    docker_host = started.stdout.strip().removeprefix("DOCKER_HOST=")
    # The legacy builder resolves FROM from local images only; BuildKit would ask a registry.
    client = Docker({**env, "DOCKER_HOST": docker_host, "DOCKER_BUILDKIT": "0"})
    try:
        yield client
    finally:
        if not already_running:
            engine_script("stop", env, 120)


@pytest.fixture(scope="session")
def base_image(docker: Docker) -> None:
    """``python:3.11-slim`` in the private engine (a local stand-in where no registry answers)."""
    started = time.monotonic()
    base = engine_script("base-image", docker.env, BASE_IMAGE_TIMEOUT_S)
    assert base.returncode == 0, f"no python:3.11-slim base image: {base.stderr}"
    FIGURES["base image"] = f"{time.monotonic() - started:.0f} s ({base.stderr.strip() or 'found'})"


def build_image(docker: Docker, tag: str, engine: str, label: str) -> str:
    """Build the repository's Dockerfile exactly as it is, with ``--build-arg ENGINE=engine``;
    the build time and image size go to the session's figures under ``label``."""
    started = time.monotonic()
    docker(
        "build", "--network", "host", "--build-arg", f"ENGINE={engine}", "--tag", tag,
        str(REPO_DIR), timeout=BUILD_TIMEOUT_S,
    )  # fmt: skip
    FIGURES[f"{label} build time"] = f"{time.monotonic() - started:.0f} s (layer cache as found)"
    # Earlier builds' images are dangling now; the cached data-root would otherwise only grow.
    docker("image", "prune", "--force")
    size = int(docker("image", "inspect", "--format", "{{.Size}}", tag))
    FIGURES[f"{label} size"] = f"{size / 10**6:.0f} MB (base python:3.11-slim included)"
    return tag


@pytest.fixture(scope="session")
def image(docker: Docker, base_image: None) -> str:
    """The service image, built from the repository's Dockerfile exactly as it is."""
    return build_image(docker, makefile_variable("IMAGE"), "opencv", "image")


@pytest.fixture(scope="session")
def int8_image(docker: Docker, base_image: None) -> str:
    """The INT8 image: the same Dockerfile with ``ENGINE=openvino-int8``."""
    return build_image(docker, "iweblens:int8", "openvino-int8", "INT8 image")
