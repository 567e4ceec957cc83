"""The per-pod limits and probes, read from the Kubernetes Deployment manifest.

The ``docker`` backend gives each container the CPU limit the cluster would give each pod, and the
pod harness (``iweblens stress``) imitates a whole pod: CPU and memory limits, the kubelet's probes
and its termination grace. Reading them from the manifest keeps the imitation from drifting apart
from what the cluster runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_MANIFEST = Path("deploy/k8s/deployment.yaml")


# Kubernetes' binary and decimal suffixes of memory quantities (resource.Quantity).
_MEMORY_UNITS = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip
_MEMORY_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?")


class ManifestError(ValueError):
    """The manifest holds no usable limit or probe."""


def parse_cpu_quantity(quantity: str | float) -> float:
    """A Kubernetes CPU quantity in cores: ``"500m"`` -> 0.5, ``"0.5"`` -> 0.5, ``1`` -> 1.0."""
    text = str(quantity).strip()
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ManifestError(f"{quantity!r} is not a CPU quantity (e.g. 0.5 or 500m)") from None
    if not cores > 0:
        raise ManifestError(f"CPU quantity {quantity!r} is not positive")
    return cores


def parse_memory_quantity(quantity: str | int) -> int:
    """A Kubernetes memory quantity in bytes: ``"512Mi"`` -> 536870912, ``"1G"`` -> 10**9."""
    match = _MEMORY_QUANTITY.fullmatch(str(quantity).strip())
    if match is None:
        raise ManifestError(f"{quantity!r} is not a memory quantity (e.g. 512Mi)")
    size = round(float(match[1]) * _MEMORY_UNITS[match[2] or ""])
    if size <= 0:
        raise ManifestError(f"memory quantity {quantity!r} is not positive")
    return size


def deployment_cpu_limit(deployment: dict[str, Any]) -> float:
    """``resources.limits.cpu`` of the Deployment's first container, in cores."""
    try:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        quantity = container["resources"]["limits"]["cpu"]
    except (KeyError, IndexError, TypeError):
        name = deployment.get("metadata", {}).get("name", "?")
        raise ManifestError(f"Deployment {name!r} sets no resources.limits.cpu") from None
    return parse_cpu_quantity(quantity)


def load_deployment(path: Path = DEFAULT_MANIFEST) -> dict[str, Any]:
    """The (first) Deployment in a possibly multi-document YAML file."""
    try:
        with Path(path).open(encoding="utf-8") as handle:
            documents = [doc for doc in yaml.safe_load_all(handle) if isinstance(doc, dict)]
    except (OSError, yaml.YAMLError) as error:
        raise ManifestError(f"cannot read a Deployment from {path}: {error}") from error
    for document in documents:
        if document.get("kind") == "Deployment":
            return document
    raise ManifestError(f"{path} holds no Deployment")


def manifest_cpu_limit(path: Path = DEFAULT_MANIFEST) -> float:
    """The CPU limit of the (first) Deployment in a possibly multi-document YAML file."""
    return deployment_cpu_limit(load_deployment(path))


@dataclass(frozen=True)
class ProbeSpec:
    """An ``httpGet`` probe as the kubelet runs it; defaults are Kubernetes' own."""

    path: str
    period_s: float = 10.0
    timeout_s: float = 1.0
    failure_threshold: int = 3
    initial_delay_s: float = 0.0

    @classmethod
    def from_manifest(cls, probe: dict[str, Any]) -> ProbeSpec:
        try:
            path = probe["httpGet"]["path"]
        except (KeyError, TypeError):
            raise ManifestError(f"only httpGet probes are imitated, not {probe!r}") from None
        return cls(
            path=path,
            period_s=float(probe.get("periodSeconds", cls.period_s)),
            timeout_s=float(probe.get("timeoutSeconds", cls.timeout_s)),
            failure_threshold=int(probe.get("failureThreshold", cls.failure_threshold)),
            initial_delay_s=float(probe.get("initialDelaySeconds", cls.initial_delay_s)),
        )


@dataclass(frozen=True)
class PodSpec:
    """What a pod of the Deployment is held to: limits, probes and the time it gets to stop.

    ``stop_grace_s`` is what remains of ``terminationGracePeriodSeconds`` once a ``preStop``
    ``sleep`` has run: the kubelet counts the grace from the start of preStop, then sends SIGTERM,
    then SIGKILL when the grace is over. ``env`` holds the container's literal ``env`` values
    (those taken from the downward API, such as the pod's name, are left out).
    """

    cpu_cores: float
    memory_bytes: int
    probes: dict[str, ProbeSpec]  # "readiness", "liveness" (those the manifest sets)
    termination_grace_s: float
    pre_stop_sleep_s: float
    env: dict[str, str] = field(default_factory=dict)

    @property
    def stop_grace_s(self) -> float:
        return max(0.0, self.termination_grace_s - self.pre_stop_sleep_s)


def deployment_pod_spec(deployment: dict[str, Any]) -> PodSpec:
    """The :class:`PodSpec` of the Deployment's first container."""
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    try:
        memory = parse_memory_quantity(container["resources"]["limits"]["memory"])
    except (KeyError, TypeError):
        name = deployment.get("metadata", {}).get("name", "?")
        raise ManifestError(f"Deployment {name!r} sets no resources.limits.memory") from None
    env = container.get("env", [])
    probes = {
        kind: ProbeSpec.from_manifest(container[f"{kind}Probe"])
        for kind in ("readiness", "liveness")
        if f"{kind}Probe" in container
    }
    return PodSpec(
        cpu_cores=deployment_cpu_limit(deployment),
        memory_bytes=memory,
        probes=probes,
        termination_grace_s=float(pod.get("terminationGracePeriodSeconds", 30)),
        pre_stop_sleep_s=_pre_stop_sleep(container),
        env={item["name"]: str(item["value"]) for item in env if "value" in item},
    )


def _pre_stop_sleep(container: dict[str, Any]) -> float:
    """Seconds of a ``preStop`` hook that is ``sleep N`` (exec or the native sleep action)."""
    pre_stop = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop.get("exec", {}).get("command", [])
    if len(command) == 2 and command[0].rsplit("/", 1)[-1] == "sleep":
        return float(command[1])
    return 0.0


def manifest_pod_spec(path: Path = DEFAULT_MANIFEST) -> PodSpec:
    """The :class:`PodSpec` of the (first) Deployment in a YAML file."""
    return deployment_pod_spec(load_deployment(path))
