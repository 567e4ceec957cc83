"""Fixtures for the deployment checks: the manifests as data, and the tools that validate them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import FIGURES, K8S_DIR, load_one


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "docker: builds and runs the service image in a private Docker engine"
    )


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
