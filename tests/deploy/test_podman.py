"""``deploy/k8s/deployment.yaml`` executed by ``podman kube play``: the pod spec as Kubernetes would
run it, with no cluster.

The image is the one the container tests build from the unchanged Dockerfile (``docker save`` into
``podman load``). podman keeps its storage under the project cache (``make clean`` removes it) and
reads ``deploy/podman/containers.conf`` through ``CONTAINERS_CONF``. The pod gets the host's network
on loopback only, so the manifest is played from a copy that differs in exactly this (checked
below): ``IWEBLENS_HOST=127.0.0.1`` and ``IWEBLENS_PORT=<a free port>`` in the container's
environment, and no ``ports`` (podman 4.3 turns every containerPort into a host port mapping, which
host networking refuses; the service listens on the host's loopback at IWEBLENS_PORT instead).

What podman 4.3 does not honour, and how each is covered instead:

- ``readinessProbe``: ignored. The test polls ``GET /readyz`` itself; test_manifests.py checks
  the probe's route and port.
- ``livenessProbe.httpGet``: becomes the health check ``curl -f http://localhost:<port>/healthz``,
  with the named port read as 0 and a ``curl`` the image does not have, so ``podman healthcheck
  run`` reports unhealthy. Its timings are honoured (checked here); the probe's request itself is
  run inside the pod by hand; test_manifests.py checks that the named port resolves.
- ``terminationGracePeriodSeconds``: ``podman kube down`` stops with no grace at all (SIGKILL at
  once). The test first stops the pod with the manifest's grace period (``podman pod stop
  --time``), as the kubelet would, then removes it with ``kube down``.
- ``lifecycle.preStop``: ignored; test_manifests.py checks it fits in the grace period and
  test_container_image.py runs its command in the image.
- ``emptyDir.sizeLimit``: ignored (the emptyDir is a podman volume without a size);
  test_manifests.py checks the limit.
- ``runAsNonRoot``: not enforced by podman; satisfied here because runAsUser (10001) is applied,
  and test_manifests.py checks both.
- Controller fields (``strategy``, ``revisionHistoryLimit``, ``selector``) have no meaning without a
  Deployment controller; ``automountServiceAccountToken`` none without an API server.
"""

from __future__ import annotations

import json
import os
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
from deploy_helpers import FIGURES, REPO_DIR, Docker, parse_memory_quantity
from support import IMAGES_DIR, free_port, run_reference_client, wait_until_ready

from iweblens.config import default_model_dir
from iweblens.harness.manifest import parse_cpu_quantity

pytestmark = pytest.mark.docker

CONTAINERS_CONF = REPO_DIR / "deploy" / "podman" / "containers.conf"
# Beside the Docker data-roots under the project cache, so `make clean` finds it.
PODMAN_ROOT = default_model_dir().parent / "podman"
CFS_PERIOD_US = 100_000  # the kernel's default CFS period, which Kubernetes and podman use
READY_TIMEOUT_S = 180
PERSON_PHOTO = "000000012807.jpg"  # an elephant and a person
CGROUP_ROOT = Path("/sys/fs/cgroup")
PODMAN_CGROUP_PARENT = "libpod_parent"  # where podman's cgroupfs manager puts pods


@dataclass
class Podman:
    """The ``podman`` client on the project's own storage and configuration."""

    name: str

    @property
    def storage(self) -> Path:
        return PODMAN_ROOT / f"storage-{self.name}"

    def command(self, *args: str) -> list[str]:
        # Runtime state in /tmp (short socket paths, emptied on reboot), like the Docker engine's.
        return [
            "podman", "--root", str(self.storage), "--runroot", f"/tmp/{self.name}-podman", *args,
        ]  # fmt: skip

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = True, stdin: Any = None
    ) -> subprocess.CompletedProcess:
        done = subprocess.run(
            self.command(*args),
            env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
            raise AssertionError(f"podman {' '.join(args)} failed:\n{output}")
        return done

    def inspect(self, what: str, *names: str) -> list[dict[str, Any]]:
        found = json.loads(self(what, "inspect", *names).stdout)
        return found if isinstance(found, list) else [found]  # podman 4.3: one pod, no list


@dataclass
class Pod:
    podman: Podman
    name: str
    container: str
    url: str
    manifest: Path

    def container_field(self, template: str) -> str:
        return self.podman("inspect", "--format", template, self.container).stdout.strip()

    def pid(self) -> int:
        return int(self.container_field("{{.State.Pid}}"))

    def running(self) -> bool:
        return self.container_field("{{.State.Running}}") == "true"


def played_manifest(deployment: dict[str, Any], port: int) -> dict[str, Any]:
    """The Deployment as podman plays it here: loopback address and port, no port mappings."""
    played = json.loads(json.dumps(deployment))
    (container,) = played["spec"]["template"]["spec"]["containers"]
    environment = [entry for entry in container["env"] if entry["name"] != "IWEBLENS_PORT"]
    container["env"] = [
        *environment,
        {"name": "IWEBLENS_HOST", "value": "127.0.0.1"},
        {"name": "IWEBLENS_PORT", "value": str(port)},
    ]
    del container["ports"]
    return played


def cgroup_file(pid: int, controller: str, name: str) -> str:
    """A cgroup v1 control file of the process (``cpu``, ``cpu.cfs_quota_us``)."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return (CGROUP_ROOT / controllers / path.lstrip("/") / name).read_text().strip()
    raise AssertionError(f"process {pid} has no {controller} cgroup (cgroup v1 expected)")


def remove_cgroups(pod_id: str, parents_before: set[Path]) -> None:
    """Remove what podman 4.3's cgroupfs manager leaves behind once the pod is gone: the pod's
    empty cgroups in the name=systemd and unified hierarchies, and parents it created."""
    for pod_cgroup in CGROUP_ROOT.glob(f"*/{PODMAN_CGROUP_PARENT}/{pod_id}"):
        for directory in sorted(pod_cgroup.glob("**/"), key=lambda path: -len(path.parts)):
            directory.rmdir()
    for parent in set(CGROUP_ROOT.glob(f"*/{PODMAN_CGROUP_PARENT}")) - parents_before:
        parent.rmdir()


def proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


@pytest.fixture(scope="module")
def podman() -> Podman:
    if shutil.which("podman") is None or shutil.which("catatonit") is None:
        pytest.skip("podman or catatonit is not installed (scripts/install-system-deps.sh)")
    client = Podman(os.environ.get("IWEBLENS_DOCKER_NAME", "iweblens"))
    info = client("info", check=False)
    if info.returncode != 0:
        pytest.skip(f"podman cannot run here: {info.stderr.strip()}")
    return client


@pytest.fixture(scope="module")
def podman_image(podman: Podman, docker: Docker, image: str) -> str:
    """The image the Docker tests built, copied into podman's storage unless it is there."""
    image_id = docker("image", "inspect", "--format", "{{.Id}}", image)
    if podman("image", "exists", image_id, check=False).returncode != 0:
        started = time.monotonic()
        with subprocess.Popen(
            ["docker", "save", image], env=docker.env, stdout=subprocess.PIPE
        ) as save:
            podman("load", stdin=save.stdout, timeout=600)
        assert save.returncode == 0, "docker save failed"
        FIGURES["docker save | podman load"] = f"{time.monotonic() - started:.0f} s"
    podman("tag", image_id, image)
    podman("image", "prune", "--force")
    return image


@pytest.fixture(scope="module")
def pod(
    podman: Podman,
    podman_image: str,
    deployment: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pod]:
    """``podman kube play --network host`` of the Deployment, ready to answer."""
    port = free_port()
    manifest = tmp_path_factory.mktemp("podman") / "deployment.yaml"
    manifest.write_text(yaml.safe_dump(played_manifest(deployment, port)))
    parents_before = set(CGROUP_ROOT.glob(f"*/{PODMAN_CGROUP_PARENT}"))
    started = time.monotonic()
    podman("kube", "play", "--network", "host", str(manifest), timeout=300)
    (pod_report,) = podman.inspect("pod", "--latest")
    try:
        (container,) = [
            entry["Name"]
            for entry in pod_report["Containers"]
            if entry["Id"] != pod_report["InfraContainerID"]
        ]
        handle = Pod(podman, pod_report["Name"], container, f"http://127.0.0.1:{port}", manifest)

        def exited() -> str | None:
            if handle.running():
                return None
            logs = podman("logs", "--tail", "40", container, check=False)
            return f"the pod's container exited before it was ready:\n{logs.stdout}{logs.stderr}"

        wait_until_ready(handle.url, exited, READY_TIMEOUT_S)
        FIGURES["podman kube play until ready"] = f"{time.monotonic() - started:.0f} s"
        yield handle
    finally:
        # Only while the pod exists: a `kube down` that fails (no such pod) leaves podman's
        # overlay storage bind-mounted on itself.
        if podman("pod", "exists", pod_report["Id"], check=False).returncode == 0:
            podman("kube", "down", str(manifest), check=False)
        remove_cgroups(pod_report["Id"], parents_before)


def post_photo(url: str, photo: Path) -> requests.Response:
    with photo.open("rb") as handle:
        return requests.post(
            f"{url}/api/object_detection", files={"image": (photo.name, handle)}, timeout=120
        )


def test_the_played_copy_changes_only_the_bind_address_port_and_port_mappings(
    deployment: dict[str, Any],
) -> None:
    played = played_manifest(deployment, 5123)
    (original,) = deployment["spec"]["template"]["spec"]["containers"]
    (changed,) = played["spec"]["template"]["spec"]["containers"]
    assert {key: value for key, value in original.items() if key not in ("env", "ports")} == {
        key: value for key, value in changed.items() if key != "env"
    }
    assert "ports" not in changed
    before = {entry["name"]: entry for entry in original["env"]}
    after = {entry["name"]: entry for entry in changed["env"]}
    assert {name: after[name] for name in after if before.get(name) != after[name]} == {
        "IWEBLENS_HOST": {"name": "IWEBLENS_HOST", "value": "127.0.0.1"},
        "IWEBLENS_PORT": {"name": "IWEBLENS_PORT", "value": "5123"},
    }
    template = {key: value for key, value in deployment["spec"]["template"]["spec"].items()}
    del template["containers"]
    played_template = dict(played["spec"]["template"]["spec"])
    del played_template["containers"]
    assert played_template == template
    assert {key: value for key, value in played.items() if key != "spec"} == {
        key: value for key, value in deployment.items() if key != "spec"
    }


def test_pod_runs_read_only_as_uid_10001_without_capabilities(
    pod: Pod, deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    user = deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"]
    group = deployment["spec"]["template"]["spec"]["securityContext"]["runAsGroup"]
    status = proc_status(pod.pid())
    assert status["Uid"].split() == [str(user)] * 4
    assert status["Gid"].split() == [str(group)] * 4
    assert int(status["CapEff"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # filtered: the runtime's default profile
    assert pod.container_field("{{.HostConfig.ReadonlyRootfs}}") == "true"
    writes = pod.podman("exec", pod.container, "touch", "/opt/written", check=False)
    assert writes.returncode != 0 and "Read-only file system" in writes.stderr
    (tmp_mount,) = container["volumeMounts"]
    pod.podman("exec", pod.container, "touch", f"{tmp_mount['mountPath']}/written")


def test_pod_gets_the_deployments_cpu_quota_and_memory_limit(
    pod: Pod, container: dict[str, Any]
) -> None:
    limits = container["resources"]["limits"]
    pid = pod.pid()
    period = int(cgroup_file(pid, "cpu", "cpu.cfs_period_us"))
    assert period == CFS_PERIOD_US
    assert int(cgroup_file(pid, "cpu", "cpu.cfs_quota_us")) == round(
        parse_cpu_quantity(limits["cpu"]) * period
    )
    assert int(cgroup_file(pid, "memory", "memory.limit_in_bytes")) == parse_memory_quantity(
        limits["memory"]
    )


def test_reference_client_is_answered_by_the_pod_it_names(pod: Pod, photos: list[Path]) -> None:
    lines = run_reference_client(IMAGES_DIR, f"{pod.url}/api/object_detection", 2)
    assert lines[-1].startswith("Total client script time: ")
    assert ["objects" in json.loads(line) for line in lines[:-1]] == [True] * len(photos)
    response = post_photo(pod.url, IMAGES_DIR / PERSON_PHOTO)
    assert response.status_code == 200, response.text
    # The downward API's metadata.name, as podman names the Deployment's pod.
    assert response.headers["X-Served-By"] == pod.name
    assert {"person", "elephant"} <= {found["label"] for found in response.json()["objects"]}


def test_liveness_probe_passes_in_the_pod(pod: Pod, container: dict[str, Any]) -> None:
    probe = container["livenessProbe"]
    check = json.loads(pod.container_field("{{json .Config.Healthcheck}}"))
    seconds = 10**9
    assert check["Interval"] == probe["periodSeconds"] * seconds
    assert check["Timeout"] == probe["timeoutSeconds"] * seconds
    assert check["Retries"] == probe["failureThreshold"]
    assert check["StartPeriod"] == probe["initialDelaySeconds"] * seconds
    assert f"{probe['httpGet']['path']}" in " ".join(check["Test"])
    ran = pod.podman("healthcheck", "run", pod.container, check=False)
    if ran.returncode != 0:
        # podman 4.3's curl command cannot run in this image (see the module docstring): only
        # that failure is accepted, then the probe's own request is made inside the pod.
        (last,) = pod.podman.inspect("container", pod.container)[0]["State"]["Health"]["Log"][-1:]
        assert "curl: not found" in last["Output"], last
    # The kubelet's request: GET path on the container's port (host networking: loopback).
    url = f"{pod.url}{probe['httpGet']['path']}"
    request = "import sys, urllib.request as r; r.urlopen(sys.argv[1], timeout=float(sys.argv[2]))"
    pod.podman("exec", pod.container, "python", "-c", request, url, str(probe["timeoutSeconds"]))


def test_pod_stops_cleanly_and_kube_down_leaves_nothing(
    pod: Pod, deployment: dict[str, Any]
) -> None:
    # Last. The kubelet's stop: SIGTERM, then up to the grace period for the server to drain.
    grace_s = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    pod.podman("pod", "stop", "--time", str(grace_s), pod.name, timeout=grace_s + 30)
    assert pod.container_field("{{.State.ExitCode}}") == "0"
    pod.podman("kube", "down", str(pod.manifest))
    for listing in (("ps", "--all"), ("pod", "ps"), ("volume", "ls")):
        assert pod.podman(*listing, "--quiet").stdout.strip() == "", listing
    storage = str(pod.podman.storage)
    assert not [
        line for line in Path("/proc/self/mounts").read_text().splitlines() if storage in line
    ]
