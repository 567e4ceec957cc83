"""Static checks of the Kubernetes manifests and the kind cluster config.

``kubernetes-validate --strict`` checks the schema; the tests below check meaning, which no
schema does (a CPU quantity of "5" or a Service selecting no pod both validate). They are also the
only check of the fields ``podman kube play`` cannot honour (test_podman.py lists them): the port
mappings, the readiness probe, the liveness probe's named port, preStop and the grace period,
runAsNonRoot and the emptyDir's sizeLimit.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_helpers import (
    K8S_DIR,
    KIND_CONFIG,
    KUBERNETES_VERSION,
    dockerfile_user_id,
    exposed_port,
    load_one,
    makefile_variable,
    parse_memory_quantity,
    venv_tool,
)
from support import FrontClient, unstarted_front

from iweblens.config import Settings
from iweblens.harness.manifest import parse_cpu_quantity
from iweblens.inference.sizing import MARGIN_BYTES, MIN_REQUEST_BYTES, MiB, NetworkLoad
from iweblens.service.server import EXIT_SLACK_S, SHUTDOWN_SLACK_S

MANIFESTS = sorted(path for path in K8S_DIR.glob("*.yaml") if path.name != "kustomization.yaml")
NODE_PORT_RANGE = range(30000, 32768)


def kubernetes_validate(*arguments: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    tool = venv_tool("kubernetes-validate")
    if tool is None:
        pytest.skip("kubernetes-validate is not installed (pip install -e '.[dev]')")
    return subprocess.run(
        [tool, "--strict", "--kubernetes-version", KUBERNETES_VERSION, *arguments],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def container_port(container: dict[str, Any], port: int | str) -> int:
    """Resolve a probe's or Service's port (a number or a port name) to the container's port."""
    numbers = {entry["containerPort"] for entry in container["ports"]}
    names = {
        entry["name"]: entry["containerPort"] for entry in container["ports"] if "name" in entry
    }
    resolved = names.get(port, port) if isinstance(port, str) else port
    assert resolved in numbers, f"port {port!r} is not one the container exposes ({numbers})"
    return int(resolved)


def env_value(container: dict[str, Any], name: str) -> dict[str, Any]:
    entries = {entry["name"]: entry for entry in container.get("env", [])}
    assert name in entries, f"the container does not set {name}"
    return entries[name]


# Schema -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda path: path.name)
def test_manifest_passes_strict_schema_validation(manifest: Path) -> None:
    done = kubernetes_validate("--quiet", str(manifest))
    assert done.returncode == 0, done.stdout + done.stderr


def test_strict_validation_rejects_an_unknown_field(deployment: dict[str, Any]) -> None:
    # Proves the check above can fail: a misspelt field must not slip through.
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    done = kubernetes_validate("-", stdin=yaml.safe_dump(broken))
    assert done.returncode != 0


def test_kustomization_renders_exactly_the_deployment_and_service(kubectl: str) -> None:
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    kinds = sorted(document["kind"] for document in yaml.safe_load_all(rendered))
    assert kinds == ["Deployment", "Service"]
    done = kubernetes_validate("-", stdin=rendered)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_two_model_overlay_loads_both_models_with_their_memory(kubectl: str) -> None:
    overlay = K8S_DIR.parent / "two-models"
    rendered = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    documents = {document["kind"]: document for document in yaml.safe_load_all(rendered)}
    assert sorted(documents) == ["Deployment", "Service"]
    assert kubernetes_validate("-", stdin=rendered).returncode == 0
    container = documents["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    models = env_value(container, "IWEBLENS_MODELS")["value"].split(",")
    assert models == ["yolov3-tiny", "yolov4-tiny"]
    limits = container["resources"]["limits"]
    assert limits["cpu"] == "0.5"
    settings = Settings()
    loads = [NetworkLoad(name, settings.engine, settings.input_size) for name in models]
    # The same room the pod's own sizing keeps, with 256 MiB for the process itself.
    needed = sum(load.bytes for load in loads) + MARGIN_BYTES + MIN_REQUEST_BYTES + 256 * MiB
    assert parse_memory_quantity(limits["memory"]) >= needed
    assert container["resources"]["requests"]["memory"] == limits["memory"]


def test_hpa_is_kept_out_of_the_default_kustomization() -> None:
    resources = load_one(K8S_DIR / "kustomization.yaml")["resources"]
    assert "hpa.yaml" not in resources
    assert all((K8S_DIR / resource).is_file() for resource in resources)


# Meaning ----------------------------------------------------------------------------------------


def test_memory_quantities_parse() -> None:
    assert parse_memory_quantity("512Mi") == 512 * 2**20
    assert parse_memory_quantity("1G") == 10**9
    assert parse_memory_quantity("1.5Gi") == 3 * 2**29
    assert parse_memory_quantity(1024) == 1024


def test_each_pod_requests_and_is_limited_to_half_a_cpu(container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert parse_cpu_quantity(resources["requests"]["cpu"]) == 0.5
    assert parse_cpu_quantity(resources["limits"]["cpu"]) == 0.5


def test_memory_is_requested_and_limited_alike(container: dict[str, Any]) -> None:
    # Equal request and limit (CPU and memory) make the pod Guaranteed: never evicted first.
    request = parse_memory_quantity(container["resources"]["requests"]["memory"])
    limit = parse_memory_quantity(container["resources"]["limits"]["memory"])
    assert request == limit
    assert limit >= 256 * 2**20, "the model and OpenCV alone take a few hundred MiB"


def test_deployment_starts_with_one_replica(deployment: dict[str, Any]) -> None:
    assert deployment["spec"]["replicas"] == 1


def test_deployment_selector_matches_its_pod_labels(deployment: dict[str, Any]) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector
    assert selector.items() <= labels.items()


def test_service_selects_the_pods(deployment: dict[str, Any], service: dict[str, Any]) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector
    assert selector.items() <= labels.items()


def test_service_is_a_nodeport_from_80_to_the_container(
    service: dict[str, Any], container: dict[str, Any]
) -> None:
    assert service["spec"]["type"] == "NodePort"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert port["nodePort"] in NODE_PORT_RANGE
    assert container_port(container, port["targetPort"]) == exposed_port()


def test_container_listens_where_the_image_exposes(container: dict[str, Any]) -> None:
    (port,) = container["ports"]
    assert port["containerPort"] == exposed_port()
    assert int(env_value(container, "IWEBLENS_PORT")["value"]) == exposed_port()


def test_image_is_the_one_make_image_tags(container: dict[str, Any]) -> None:
    assert container["image"] == makefile_variable("IMAGE")
    # kind-loaded images are never pulled; "Always" would fail with no registry.
    assert container["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize(
    ("probe", "path"), [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]
)
def test_probes_hit_real_routes(container: dict[str, Any], probe: str, path: str) -> None:
    http_get = container[probe]["httpGet"]
    assert http_get["path"] == path
    # Answered (not 404) by the real service, whose inference pool is never started.
    answer = FrontClient(unstarted_front(Settings())).get(path)
    assert answer.status_code in (200, 503) and answer.json, answer.status_code
    assert container_port(container, http_get["port"]) == exposed_port()


def test_pod_name_signs_the_responses(container: dict[str, Any]) -> None:
    served_by = env_value(container, "IWEBLENS_SERVED_BY")
    assert served_by["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_scale_down_drains_before_the_pod_is_killed(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = int(command[1])
    graceful_s = int(env_value(container, "IWEBLENS_GRACEFUL_TIMEOUT")["value"])
    grace_s = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert pre_stop_s > 0
    # Kubernetes counts the preStop hook inside the grace period, then the server drains:
    # the graceful timeout, then a few seconds for the last answers to leave; the process exits
    # at the latest EXIT_SLACK_S later, whatever still runs.
    assert grace_s > pre_stop_s + graceful_s + SHUTDOWN_SLACK_S + EXIT_SLACK_S
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_pod_runs_locked_down(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    pod_security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == dockerfile_user_id() != 0
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]


def test_read_only_pod_gets_a_writable_tmp(
    deployment: dict[str, Any], container: dict[str, Any]
) -> None:
    # A read-only root filesystem still needs a temporary directory for libraries that ask.
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {
        volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]
    }
    empty_dir = volumes[mounts["/tmp"]]["emptyDir"]
    # Bounded, so a runaway writer is evicted rather than filling the node, and well inside the
    # memory limit, so even a memory-backed emptyDir could not crowd out the service.
    size_limit = parse_memory_quantity(empty_dir["sizeLimit"])
    assert 0 < size_limit < parse_memory_quantity(container["resources"]["limits"]["memory"]) / 4


def test_hpa_scales_the_deployment_one_to_three_on_cpu(deployment: dict[str, Any]) -> None:
    hpa = load_one(K8S_DIR / "hpa.yaml")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"


def test_kind_cluster_has_one_control_plane_and_one_worker() -> None:
    cluster = load_one(KIND_CONFIG)
    assert cluster["kind"] == "Cluster"
    assert cluster["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    roles = sorted(node["role"] for node in cluster["nodes"])
    assert roles == ["control-plane", "worker"]


def test_kind_maps_host_port_80_to_the_node_port(service: dict[str, Any]) -> None:
    cluster = load_one(KIND_CONFIG)
    mappings = [
        mapping for node in cluster["nodes"] for mapping in node.get("extraPortMappings", [])
    ]
    (mapping,) = mappings
    (port,) = service["spec"]["ports"]
    assert mapping["hostPort"] == 80
    assert mapping["containerPort"] == port["nodePort"]
    assert mapping.get("protocol", "TCP") == "TCP"


def uncommented(text: str, marker: str = "# ") -> str:
    """The lines commented with exactly ``marker`` at their indentation, with it removed."""
    lines = []
    for line in text.splitlines():
        indent = len(line) - len(line.lstrip())
        if line[indent:].startswith(marker) and not line[indent:].startswith("##"):
            lines.append(line[:indent] + line[indent + len(marker) :])
    return "\n".join(lines) + "\n"


def test_the_api_key_secret_example_is_valid_and_matches_the_deployment() -> None:
    example = K8S_DIR / "api-keys-secret.yaml"
    assert "api-keys-secret.yaml" not in load_one(K8S_DIR / "kustomization.yaml")["resources"]
    assert not [doc for doc in yaml.safe_load_all(example.read_text()) if doc]
    secret_text = uncommented(example.read_text())
    done = kubernetes_validate("-", stdin=secret_text)
    assert done.returncode == 0, done.stdout + done.stderr
    secret = yaml.safe_load(secret_text)
    deployment_text = (K8S_DIR / "deployment.yaml").read_text()
    enabled = uncommented(deployment_text.split("containers:", 1)[1])
    assert f"secretName: {secret['metadata']['name']}" in enabled
    mount = re.search(r"mountPath: (/run/secrets/\S+)", enabled)
    assert mount is not None
    keys_file = re.search(r"value: (\S+)", enabled.split("IWEBLENS_API_KEYS_FILE", 1)[1])
    assert keys_file is not None
    assert keys_file.group(1) == f"{mount.group(1)}/{next(iter(secret['stringData']))}"
