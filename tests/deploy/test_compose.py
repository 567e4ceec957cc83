"""``compose.yaml``: the same container as one pod of the Deployment, for Docker without Kubernetes.

First its meaning, against ``deploy/k8s/deployment.yaml`` (no engine needed): the same image,
limits, probe timings and lock-down. Then Debian's Compose (v1) runs it in the private engine with
the image the container tests built, exactly as written (host networking, bound to loopback) but for
an override file that picks a free port.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from deploy_helpers import (
    FIGURES,
    REPO_DIR,
    Docker,
    load_one,
    makefile_variable,
    parse_memory_quantity,
)
from support import IMAGES_DIR, free_port, wait_until_ready

from iweblens.harness.manifest import parse_cpu_quantity

COMPOSE_FILE = REPO_DIR / "compose.yaml"
SERVICE = "iweblens"
READY_TIMEOUT_S = 180
PERSON_PHOTO = "000000012807.jpg"  # an elephant and a person
# Docker's byte units are binary ("512m" is 512 MiB); its durations are Go's ("1m30s").
DOCKER_BYTE_UNITS = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}


def docker_bytes(text: str | int) -> int:
    """A Compose byte size in bytes: ``"512m"`` -> 536870912."""
    match = re.fullmatch(r"(\d+)([bkmg]?)", str(text).strip().lower())
    assert match, f"not a byte size: {text!r}"
    return int(match.group(1)) * DOCKER_BYTE_UNITS[match.group(2) or "b"]


def duration_s(text: str) -> float:
    """A Compose duration in seconds: ``"1m30s"`` -> 90.0."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(number + unit for number, unit in parts) == text, text
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def tmpfs_mounts(service: dict[str, Any]) -> dict[str, dict[str, str]]:
    """``/tmp:size=16m`` entries as {path: {option: value}}."""
    mounts = {}
    for entry in service["tmpfs"]:
        path, _, options = entry.partition(":")
        mounts[path] = dict(option.partition("=")[::2] for option in options.split(",") if option)
    return mounts


@pytest.fixture(scope="module")
def compose_service() -> dict[str, Any]:
    return load_one(COMPOSE_FILE)["services"][SERVICE]


def test_compose_runs_the_image_make_image_builds(
    compose_service: dict[str, Any], container: dict[str, Any]
) -> None:
    assert compose_service["image"] == container["image"] == makefile_variable("IMAGE")
    assert compose_service["build"] == "."


def test_compose_limits_equal_the_deployments(
    compose_service: dict[str, Any], container: dict[str, Any]
) -> None:
    limits = container["resources"]["limits"]
    assert compose_service["cpus"] == parse_cpu_quantity(limits["cpu"])
    memory = parse_memory_quantity(limits["memory"])
    assert docker_bytes(compose_service["mem_limit"]) == memory
    # Memory plus swap capped at the same figure: no swap, as on a Kubernetes node.
    assert docker_bytes(compose_service["memswap_limit"]) == memory


def test_compose_is_locked_down_like_the_pod(
    compose_service: dict[str, Any], deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    security = container["securityContext"]
    run_as = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert compose_service["user"] == run_as
    assert compose_service["read_only"] is security["readOnlyRootFilesystem"] is True
    assert compose_service["cap_drop"] == security["capabilities"]["drop"] == ["ALL"]
    assert security["allowPrivilegeEscalation"] is False
    assert "no-new-privileges:true" in compose_service["security_opt"]
    # The writable /tmp is the pod's emptyDir, with the same size limit.
    (mount,) = container["volumeMounts"]
    (volume,) = [entry for entry in pod["volumes"] if entry["name"] == mount["name"]]
    size = tmpfs_mounts(compose_service)[mount["mountPath"]]["size"]
    assert docker_bytes(size) == parse_memory_quantity(volume["emptyDir"]["sizeLimit"])
    assert duration_s(compose_service["stop_grace_period"]) == pod["terminationGracePeriodSeconds"]


def test_compose_health_check_has_the_liveness_probes_timings(
    compose_service: dict[str, Any], container: dict[str, Any]
) -> None:
    # The command is the image's HEALTHCHECK (GET /healthz, the liveness probe's path).
    probe = container["livenessProbe"]
    check = compose_service["healthcheck"]
    assert "test" not in check
    assert probe["httpGet"]["path"] == "/healthz"
    assert duration_s(check["interval"]) == probe["periodSeconds"]
    assert duration_s(check["timeout"]) == probe["timeoutSeconds"]
    assert check["retries"] == probe["failureThreshold"]
    assert duration_s(check["start_period"]) == probe["initialDelaySeconds"]


def test_compose_serves_on_loopback_where_the_pod_listens(
    compose_service: dict[str, Any], container: dict[str, Any]
) -> None:
    environment = compose_service["environment"]
    pod_environment = {entry["name"]: entry.get("value") for entry in container["env"]}
    assert compose_service["network_mode"] == "host"
    assert "ports" not in compose_service
    assert environment["IWEBLENS_HOST"] == "127.0.0.1"
    (port,) = container["ports"]
    assert int(environment["IWEBLENS_PORT"]) == port["containerPort"]
    assert environment["IWEBLENS_GRACEFUL_TIMEOUT"] == pod_environment["IWEBLENS_GRACEFUL_TIMEOUT"]


# The file run by Compose ---------------------------------------------------------------------


@dataclass
class ComposeProject:
    docker: Docker
    name: str
    files: list[Path]
    url: str
    container: str = ""

    def __call__(self, *args: str, timeout: float = 180) -> str:
        program = shutil.which("docker-compose")
        assert program is not None
        files = [argument for path in self.files for argument in ("--file", str(path))]
        # Compose v1 is a Python program of the system's: keep our PYTHONPATH out of it.
        env = {name: value for name, value in self.docker.env.items() if name != "PYTHONPATH"}
        done = subprocess.run(
            [program, "--project-name", self.name, *files, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert done.returncode == 0, f"docker-compose {' '.join(args)} failed:\n{done.stderr}"
        return done.stdout

    def inspect(self, template: str) -> str:
        return self.docker("inspect", "--format", template, self.container)


@pytest.fixture(scope="module")
def compose(
    docker: Docker, image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComposeProject]:
    """``docker-compose up`` of compose.yaml plus an override that sets a free port, ready."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose is not installed (scripts/install-system-deps.sh)")
    port = free_port()
    override = tmp_path_factory.mktemp("compose") / "port.yaml"
    override.write_text(
        yaml.safe_dump({"services": {SERVICE: {"environment": {"IWEBLENS_PORT": str(port)}}}})
    )
    project = ComposeProject(
        docker, f"iweblens-compose-{port}", [COMPOSE_FILE, override], f"http://127.0.0.1:{port}"
    )
    started = time.monotonic()
    try:
        project("up", "--detach", "--no-build")
        project.container = project("ps", "--quiet", SERVICE).strip()

        def exited() -> str | None:
            if project.inspect("{{.State.Running}}") == "true":
                return None
            return "the Compose container exited:\n" + docker("logs", project.container)

        wait_until_ready(project.url, exited, READY_TIMEOUT_S)
        FIGURES["docker-compose up until ready"] = f"{time.monotonic() - started:.0f} s"
        yield project
    finally:
        project("down")


def test_compose_container_gets_what_the_file_says(
    compose: ComposeProject, compose_service: dict[str, Any]
) -> None:
    host_config = json.loads(compose.inspect("{{json .HostConfig}}"))
    memory = docker_bytes(compose_service["mem_limit"])
    assert host_config["NanoCpus"] == compose_service["cpus"] * 10**9
    assert host_config["Memory"] == host_config["MemorySwap"] == memory
    assert host_config["ReadonlyRootfs"] is True
    assert (
        host_config["Tmpfs"]
        == {"/tmp": "size=16m"}
        == {
            path: ",".join(f"{key}={value}" for key, value in options.items())
            for path, options in tmpfs_mounts(compose_service).items()
        }
    )
    assert host_config["CapDrop"] == compose_service["cap_drop"]
    assert host_config["SecurityOpt"] == compose_service["security_opt"]
    assert host_config["NetworkMode"] == "host"
    assert compose.inspect("{{.Config.User}}") == compose_service["user"]


def test_compose_container_answers_and_names_itself(compose: ComposeProject) -> None:
    with (IMAGES_DIR / PERSON_PHOTO).open("rb") as photo:
        response = requests.post(
            f"{compose.url}/api/object_detection", files={"image": photo}, timeout=120
        )
    assert response.status_code == 200, response.text
    # Host networking: the container has the host's name, and signs with it.
    assert response.headers["X-Served-By"] == compose.inspect("{{.Config.Hostname}}")
    assert {"person", "elephant"} <= {found["label"] for found in response.json()["objects"]}


def test_compose_health_check_turns_healthy(
    compose: ComposeProject, compose_service: dict[str, Any]
) -> None:
    check = compose_service["healthcheck"]
    settle_s = duration_s(check["start_period"]) + 3 * duration_s(check["interval"])
    deadline = time.monotonic() + settle_s
    while (status := compose.inspect("{{.State.Health.Status}}")) == "starting":
        assert time.monotonic() < deadline, "the health check never settled"
        time.sleep(1)
    assert status == "healthy"


def test_compose_stops_cleanly_and_down_leaves_nothing(compose: ComposeProject) -> None:
    # Last. Compose stops with the file's stop_grace_period; the server drains and exits 0.
    compose("stop")
    assert compose.inspect("{{.State.ExitCode}}") == "0"
    compose("down")
    label = f"label=com.docker.compose.project={compose.name}"
    assert compose.docker("ps", "--all", "--quiet", "--filter", label) == ""
    assert compose.docker("network", "ls", "--quiet", "--filter", label) == ""
    assert compose.docker("volume", "ls", "--quiet", "--filter", label) == ""
