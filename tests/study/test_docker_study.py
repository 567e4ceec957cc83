"""The ``docker`` backend for real: containers of the service image behind HAProxy.

Uses the private engine of ``scripts/docker-engine.sh`` (started here if it is not running, and
stopped again) and the ``iweblens:latest`` image, built from the Dockerfile when the engine's cache
does not hold it yet.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from iweblens.harness.manifest import manifest_cpu_limit
from iweblens.load.client import run_load
from iweblens.study.replicas.docker import DEFAULT_IMAGE, DockerBackend

REPO_DIR = Path(__file__).resolve().parents[2]
ENGINE_SCRIPT = REPO_DIR / "scripts" / "docker-engine.sh"
MANIFEST = REPO_DIR / "deploy" / "k8s" / "deployment.yaml"


def engine(command: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ENGINE_SCRIPT), command], env=env, capture_output=True, text=True, timeout=timeout
    )


def docker(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def docker_env() -> Iterator[dict[str, str]]:
    """The environment that points ``docker`` at a running private engine holding the image."""
    env = dict(os.environ)
    already_running = engine("status", env, 30).returncode == 0
    started = engine("start", env, 120)
    if started.returncode != 0:
        pytest.skip(f"no Docker engine can run here: {started.stderr.strip()}")
    env["DOCKER_HOST"] = started.stdout.strip().removeprefix("DOCKER_HOST=")
    try:
        inspect = ["docker", "image", "inspect", DEFAULT_IMAGE]
        present = subprocess.run(inspect, env=env, capture_output=True)
        if present.returncode != 0:
            assert engine("base-image", env).returncode == 0
            build = ["build", "--network", "host", "--tag", DEFAULT_IMAGE, str(REPO_DIR)]
            docker({**env, "DOCKER_BUILDKIT": "0"}, *build, timeout=1800)
        yield env
    finally:
        if not already_running:
            engine("stop", env, 120)


def test_two_containers_limited_like_pods_share_the_load(
    docker_env: dict[str, str], haproxy: str, photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_env["DOCKER_HOST"])
    backend = DockerBackend(cpu_limit=manifest_cpu_limit(MANIFEST))
    prefix = f"iweblens-{os.getpid()}-"
    try:
        backend.scale(2)
        assert backend.readiness() == {"replica-1": True, "replica-2": True}
        for name in backend.replica_names():
            inspected = docker(
                docker_env,
                "inspect",
                "--format",
                "{{.HostConfig.NanoCpus}} {{.HostConfig.NetworkMode}}",
                prefix + name,
            )
            assert inspected == "500000000 host"
        result = run_load(photos[:4], backend.endpoint, 2, progress=False)
        assert (result.errors, result.timeouts) == (0, 0)
        assert result.per_replica == {"replica-1": 2, "replica-2": 2}
    finally:
        backend.close()
    left = docker(docker_env, "ps", "--all", "--quiet", "--filter", f"name={prefix}")
    assert left == ""
