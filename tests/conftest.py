"""Shared fixtures: the real model, real photographs, and a real server on loopback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import API_KEYS, COCO128_DIR, DEPLOYMENT_MANIFEST, IMAGES_DIR, TESTS_DIR, ServerProcess

from iweblens.config import Settings
from iweblens.harness.cgroup import CgroupUnavailable, PodCgroup
from iweblens.harness.manifest import PodSpec, manifest_pod_spec
from iweblens.models.store import YOLOV4_TINY, ModelPaths, ModelStore

# What the quick loop (``make quick``) leaves out, in one place; the markers are declared in
# pyproject.toml. A test that asks for an imitated pod needs root (cgroups) and takes seconds.
ROOT_FIXTURES = frozenset({"pod_spec"})
ROOT_MODULES = frozenset({"inference/test_sizing.py", "harness/test_cgroup.py"})
BROWSER_MODULES = frozenset({"service/test_page.py"})
DOCKER_MODULES = frozenset({"study/test_docker_study.py"})
SLOW_MODULES = frozenset(
    {
        "inference/test_cost.py",
        "inference/test_image_headers_fuzz.py",
        "inference/test_quantize.py",
        "service/test_parsing_fuzz.py",
        "service/test_reliability_fuzz.py",
        "service/test_reliability_slow_clients.py",
        "study/test_local_study.py",
    }
)
SLOW_FOLDERS = ("bench/", "deploy/")
FAST_IN_SLOW_FOLDERS = frozenset(
    {
        "bench/test_attacks_memory.py",
        "bench/test_claims.py",
        "bench/test_goals.py",
        "bench/test_http_client.py",
        "deploy/test_manifests.py",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test ``root``, ``docker``, ``browser`` and ``slow`` as the rules above say."""
    for item in items:
        module = item.path.relative_to(TESTS_DIR).as_posix()
        marks = set()
        if ROOT_FIXTURES & set(getattr(item, "fixturenames", ())) or module in ROOT_MODULES:
            marks |= {"root", "slow"}
        if module in BROWSER_MODULES:
            marks |= {"browser", "slow"}
        if module in DOCKER_MODULES or item.get_closest_marker("docker"):
            marks |= {"docker", "slow"}
        if module in SLOW_MODULES or (
            module.startswith(SLOW_FOLDERS) and module not in FAST_IN_SLOW_FOLDERS
        ):
            marks.add("slow")
        for mark in sorted(marks):
            item.add_marker(mark)


@pytest.fixture(scope="session")
def model_paths() -> ModelPaths:
    """The verified model files (fetched on first use)."""
    return ModelStore.in_cache(Settings.from_env().model_dir, progress=False).ensure()


@pytest.fixture(scope="session")
def yolov4_tiny_paths() -> ModelPaths:
    """The verified YOLOv4-tiny files (fetched on first use)."""
    return ModelStore.in_cache(Settings.from_env().model_dir, YOLOV4_TINY, progress=False).ensure()


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """The photographs committed with the tests."""
    return sorted(IMAGES_DIR.glob("*.jpg"))


@pytest.fixture(scope="session")
def coco128() -> list[Path]:
    """All 128 reference photographs where ``shared/`` is present, else the committed ones."""
    images = sorted(COCO128_DIR.glob("*.jpg"))
    return images or sorted(IMAGES_DIR.glob("*.jpg"))


@pytest.fixture(scope="session")
def live_server(model_paths: ModelPaths) -> Iterator[str]:
    """Base URL of a real ``iweblens serve`` on loopback, ready to answer."""
    server = ServerProcess()
    try:
        server.wait_ready()
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def keyed_server(model_paths: ModelPaths) -> Iterator[str]:
    """Base URL of a real server that requires one of ``support.API_KEYS``."""
    server = ServerProcess(env={"IWEBLENS_API_KEYS": ",".join(API_KEYS)})
    try:
        server.wait_ready()
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pod_spec(model_paths: ModelPaths) -> PodSpec:
    """The Deployment's pod (CPU and memory limits, probes, grace) for ``bench.pod.Pod``.

    Skips where this machine lets us write no CPU and memory cgroup (v1 or v2): without the
    limits, the pod tests would measure nothing a pod meets.
    """
    spec = manifest_pod_spec(DEPLOYMENT_MANIFEST)
    try:
        PodCgroup.create(
            f"iweblens-check-{os.getpid()}", spec.cpu_cores, spec.memory_bytes
        ).remove()
    except CgroupUnavailable as error:
        pytest.skip(f"no writable CPU and memory cgroup (v1 or v2) to hold a pod: {error}")
    return spec
