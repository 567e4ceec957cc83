"""The real image: built from the unchanged Dockerfile, run as the pod runs, asked real questions.

A private Docker engine is started for the test (``scripts/docker-engine.sh``; never a bridge
network, only ``--network host`` on a loopback port). With no registry reachable, the base image
``python:3.11-slim`` is a locally built stand-in. The container gets the pod's limits from
``deploy/k8s/deployment.yaml``: 0.5 CPU, its memory limit, a read-only root filesystem with a
writable /tmp, no capabilities. Where no engine can run, these tests skip and say why.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from deploy_helpers import FIGURES, Docker, parse_docker_size, parse_memory_quantity
from support import free_port, wait_until_ready

from iweblens.allocator import HUGE_PAGES, TUNABLES
from iweblens.harness.manifest import parse_cpu_quantity

pytestmark = pytest.mark.docker

READY_TIMEOUT_S = 180
HEALTHY_TIMEOUT_S = 90
CONCURRENCY = 32
LOAD_ROUNDS = 3
SERVED_BY = "container-under-test"
PERSON_PHOTO = "000000012807.jpg"  # an elephant and a person


@dataclass
class RunningContainer:
    docker: Docker
    name: str
    url: str
    memory_limit: int

    def memory_in_use(self) -> int:
        usage = self.docker("stats", "--no-stream", "--format", "{{.MemUsage}}", self.name)
        return parse_docker_size(usage.split("/")[0])

    def state(self, field: str) -> str:
        return self.docker("inspect", "--format", f"{{{{.State.{field}}}}}", self.name)


def mebibytes(size: int) -> str:
    return f"{size / 2**20:.0f} MiB"


@pytest.fixture(scope="module")
def running(docker: Docker, image: str, container: dict[str, Any]) -> Iterator[RunningContainer]:
    with run_as_the_pod(docker, image, container) as handle:
        yield handle


@contextmanager
def run_as_the_pod(
    docker: Docker, image: str, container: dict[str, Any]
) -> Iterator[RunningContainer]:
    """The image run with the pod's CPU, memory and security settings, on a loopback port."""
    limits = container["resources"]["limits"]
    memory_limit = parse_memory_quantity(limits["memory"])
    port = free_port()
    name = f"iweblens-test-{port}"
    docker(
        "run", "--detach", "--name", name,
        "--network", "host",
        "--cpus", f"{parse_cpu_quantity(limits['cpu']):g}",
        "--memory", str(memory_limit), "--memory-swap", str(memory_limit),
        "--read-only", "--tmpfs", "/tmp",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--env", "IWEBLENS_HOST=127.0.0.1",
        "--env", f"IWEBLENS_PORT={port}",
        "--env", f"IWEBLENS_SERVED_BY={SERVED_BY}",
        image,
    )  # fmt: skip
    handle = RunningContainer(docker, name, f"http://127.0.0.1:{port}", memory_limit)
    try:
        wait_ready(handle)
        yield handle
    finally:
        docker("rm", "--force", name, check=False)


def wait_ready(handle: RunningContainer) -> None:
    def exited() -> str | None:
        if handle.state("Running") == "true":
            return None
        logs = handle.docker("logs", "--tail", "40", handle.name, check=False)
        return f"the container exited before it was ready:\n{logs}"

    wait_until_ready(handle.url, exited, READY_TIMEOUT_S)


def post_photo(url: str, photo: Path) -> requests.Response:
    with photo.open("rb") as handle:
        return requests.post(
            f"{url}/api/object_detection",
            files={"image": (photo.name, handle, "image/jpeg")},
            timeout=120,
        )


def test_the_image_letterboxes_in_c_and_carries_no_compiler(docker: Docker, image: str) -> None:
    probe = (
        "import shutil; from iweblens.inference.letterbox import native_available; "
        "print(native_available(), shutil.which('gcc'), shutil.which('cc'))"
    )
    answer = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c", probe
    )
    assert answer == "True None None"


def test_container_detects_a_person_and_names_itself(running: RunningContainer) -> None:
    FIGURES["memory at rest"] = mebibytes(running.memory_in_use())
    response = post_photo(running.url, Path(__file__).parents[1] / "images" / PERSON_PHOTO)
    assert response.status_code == 200, response.text
    assert response.headers["X-Served-By"] == SERVED_BY
    labels = {found["label"] for found in response.json()["objects"]}
    assert {"person", "elephant"} <= labels


def test_the_pods_first_process_serves_on_huge_pages(running: RunningContainer) -> None:
    # The server re-executed itself as PID 1, with no capabilities and no-new-privileges.
    environ = running.docker("exec", running.name, "cat", "/proc/1/environ").split("\0")
    assert f"{TUNABLES}={HUGE_PAGES}=1" in environ


def test_memory_under_32_concurrent_requests_fits_the_pod_limit(
    running: RunningContainer, coco128: list[Path]
) -> None:
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(running.memory_in_use())

    sampler = threading.Thread(target=sample)
    sampler.start()
    photos = list(itertools.islice(itertools.cycle(coco128), CONCURRENCY * LOAD_ROUNDS))
    try:
        with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            statuses = list(
                pool.map(lambda photo: post_photo(running.url, photo).status_code, photos)
            )
    finally:
        done.set()
        sampler.join()
    peak = max(samples)
    FIGURES[f"memory under {CONCURRENCY} concurrent requests"] = (
        f"peak {mebibytes(peak)} over {len(samples)} samples "
        f"(pod limit {mebibytes(running.memory_limit)})"
    )
    assert statuses == [200] * len(photos)
    assert running.state("OOMKilled") == "false"
    assert peak < running.memory_limit


def test_healthcheck_turns_healthy(running: RunningContainer) -> None:
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    while (status := running.state("Health.Status")) == "starting":
        assert time.monotonic() < deadline, "the HEALTHCHECK never settled"
        time.sleep(1)
    assert status == "healthy"


def test_the_pre_stop_hook_can_run_in_the_image(
    running: RunningContainer, container: dict[str, Any]
) -> None:
    program = container["lifecycle"]["preStop"]["exec"]["command"][0]
    running.docker("exec", running.name, program, "0")


def test_stop_drains_and_exits_cleanly(running: RunningContainer) -> None:
    # Last: SIGTERM, as Kubernetes sends after preStop; the server must exit 0 well in time.
    running.docker("stop", "--time", "30", running.name, timeout=60)
    assert running.state("ExitCode") == "0"


def test_the_int8_image_serves_openvino_int8_within_the_pod_limits(
    docker: Docker, int8_image: str, container: dict[str, Any]
) -> None:
    # OpenVINO serves; NNCF, which quantized, stayed in the build stage.
    probe = "import importlib.util as u; print(bool(u.find_spec('openvino')), u.find_spec('nncf'))"
    found = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", int8_image, "-c", probe
    )  # fmt: skip
    assert found == "True None"
    sidecar = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "cat", int8_image,
        "/opt/iweblens/models/yolov3-tiny/yolov3-tiny-int8.xml.json",
    )  # fmt: skip
    provenance = json.loads(sidecar)
    assert len(provenance["calibration_images"]) == 5
    FIGURES["INT8 weights sha256"] = provenance["weights_sha256"]
    with run_as_the_pod(docker, int8_image, container) as running:
        FIGURES["INT8 image memory at rest"] = mebibytes(running.memory_in_use())
        photo = Path(__file__).parents[1] / "images" / PERSON_PHOTO
        with photo.open("rb") as handle:
            response = requests.post(
                f"{running.url}/api/object_detection",
                files={"image": (photo.name, handle, "image/jpeg")},
                data={"details": "true"},
                timeout=120,
            )
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["model"]["engine"] == "openvino-int8"
        assert {"person", "elephant"} <= {found["label"] for found in answer["objects"]}
        assert running.state("OOMKilled") == "false"
