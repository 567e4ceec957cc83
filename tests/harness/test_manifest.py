"""The per-pod limits and probes read from the Deployment manifest (docker backend, pod harness)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import DEPLOYMENT_MANIFEST

from iweblens.harness.manifest import (
    ManifestError,
    ProbeSpec,
    manifest_cpu_limit,
    manifest_pod_spec,
    parse_cpu_quantity,
    parse_memory_quantity,
)

REPO_MANIFEST = DEPLOYMENT_MANIFEST

DEPLOYMENT = """\
apiVersion: v1
kind: Service
metadata: {{name: iweblens}}
spec: {{type: NodePort}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: iweblens}}
spec:
  template:
    spec:
      containers:
        - name: iweblens
          image: iweblens:latest
          resources:
            requests: {{cpu: 250m}}
            limits: {{cpu: {cpu}, memory: 512Mi}}
"""


@pytest.mark.parametrize(
    ("quantity", "cores"),
    [("500m", 0.5), ("0.5", 0.5), (0.5, 0.5), (1, 1.0), ("2", 2.0), ("1500m", 1.5), ("250m", 0.25)],
)
def test_cpu_quantities(quantity: str | float, cores: float) -> None:
    assert parse_cpu_quantity(quantity) == cores


@pytest.mark.parametrize("quantity", ["half", "", "0", "-1", "m", "0.5 cores"])
def test_meaningless_cpu_quantities_are_refused(quantity: str) -> None:
    with pytest.raises(ManifestError):
        parse_cpu_quantity(quantity)


@pytest.mark.parametrize(("cpu", "cores"), [('"500m"', 0.5), ("0.5", 0.5), ('"1"', 1.0)])
def test_limit_of_the_deployment_in_a_multi_document_file(
    tmp_path: Path, cpu: str, cores: float
) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(DEPLOYMENT.format(cpu=cpu))
    assert manifest_cpu_limit(manifest) == cores


def test_a_deployment_without_a_limit_is_an_error(tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(DEPLOYMENT.format(cpu="1").replace("limits: {cpu: 1, ", "limits: {"))
    with pytest.raises(ManifestError, match=r"no resources\.limits\.cpu"):
        manifest_cpu_limit(manifest)


def test_a_file_without_a_deployment_is_an_error(tmp_path: Path) -> None:
    manifest = tmp_path / "service.yaml"
    manifest.write_text(DEPLOYMENT.format(cpu="1").split("---")[0])
    with pytest.raises(ManifestError, match="no Deployment"):
        manifest_cpu_limit(manifest)


def test_the_repository_manifest_limits_each_pod_to_half_a_core() -> None:
    assert manifest_cpu_limit(REPO_MANIFEST) == 0.5


def test_a_missing_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read a Deployment"):
        manifest_cpu_limit(tmp_path / "absent.yaml")


@pytest.mark.parametrize(
    ("quantity", "size"),
    [
        ("512Mi", 536870912),
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("128974848", 128974848),
        ("1.5Ki", 1536),
    ],
)
def test_memory_quantities(quantity: str, size: int) -> None:
    assert parse_memory_quantity(quantity) == size


@pytest.mark.parametrize("quantity", ["", "0", "512 Mi", "512MB", "Mi", "-1Gi", "lots"])
def test_meaningless_memory_quantities_are_refused(quantity: str) -> None:
    with pytest.raises(ManifestError):
        parse_memory_quantity(quantity)


POD = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: iweblens}
spec:
  template:
    spec:
      terminationGracePeriodSeconds: 45
      containers:
        - name: iweblens
          resources:
            limits: {cpu: 500m, memory: 512Mi}
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            periodSeconds: 2
            failureThreshold: 2
          livenessProbe:
            httpGet: {path: /healthz, port: http}
            periodSeconds: 10
            timeoutSeconds: 5
          lifecycle:
            preStop:
              exec: {command: ["sleep", "10"]}
"""


def test_pod_spec_limits_probes_and_the_grace_left_after_pre_stop(tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(POD)
    spec = manifest_pod_spec(manifest)
    assert (spec.cpu_cores, spec.memory_bytes) == (0.5, 536870912)
    # Unset fields take Kubernetes' defaults (timeoutSeconds 1, failureThreshold 3).
    assert spec.probes["readiness"] == ProbeSpec("/readyz", 2.0, 1.0, 2)
    assert spec.probes["liveness"] == ProbeSpec("/healthz", 10.0, 5.0, 3)
    assert spec.stop_grace_s == 35.0


def test_pod_spec_without_a_memory_limit_is_an_error(tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(POD.replace(", memory: 512Mi", ""))
    with pytest.raises(ManifestError, match=r"no resources\.limits\.memory"):
        manifest_pod_spec(manifest)


def test_the_repository_manifest_gives_a_pod_with_memory_and_both_probes() -> None:
    spec = manifest_pod_spec(REPO_MANIFEST)
    assert spec.memory_bytes > 0
    assert set(spec.probes) == {"readiness", "liveness"}


def test_pod_spec_env_keeps_literal_values_only(tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.yaml"
    env = """\
          env:
            - {name: IWEBLENS_SERVED_BY, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: IWEBLENS_GRACEFUL_TIMEOUT, value: "30"}
            - {name: IWEBLENS_THREADS, value: 8}
"""
    probe = "          readinessProbe:\n"
    manifest.write_text(POD.replace(probe, env + probe))
    assert manifest_pod_spec(manifest).env == {
        "IWEBLENS_GRACEFUL_TIMEOUT": "30",
        "IWEBLENS_THREADS": "8",
    }
