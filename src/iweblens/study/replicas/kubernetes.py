"""``kubernetes``: the Deployment on a real cluster, scaled with ``kubectl``.

The load goes through the Service's NodePort (a kind cluster maps it to the host's port 80);
pods sign their responses with their hostname, which is the pod name, so the per-replica counts
name real pods. Nothing is started here: the cluster and the Deployment belong to the user, so
``close`` leaves them as they are.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from iweblens.harness.manifest import ManifestError, deployment_cpu_limit
from iweblens.study.replicas import BackendError

DEFAULT_ENDPOINT = "http://localhost:80/api/object_detection"


def _is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _is_terminating(pod: dict[str, Any]) -> bool:
    return "deletionTimestamp" in pod.get("metadata", {})


class KubernetesBackend:
    """The ``deployment`` in ``namespace``, reached at ``endpoint``."""

    name = "kubernetes"

    def __init__(
        self,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        deployment: str = "iweblens",
        namespace: str | None = None,
        context: str | None = None,
        kubectl: str = "kubectl",
        ready_timeout: float = 300.0,
    ) -> None:
        self.endpoint = endpoint
        self.deployment = deployment
        self.ready_timeout = ready_timeout
        self._global_args = [kubectl]
        if context:
            self._global_args += ["--context", context]
        if namespace:
            self._global_args += ["--namespace", namespace]
        self._refuse_autoscaler()
        spec = json.loads(self._kubectl("get", f"deployment/{deployment}", "--output", "json"))
        labels = spec.get("spec", {}).get("selector", {}).get("matchLabels") or {}
        if not labels:
            raise BackendError(f"deployment/{deployment} has no spec.selector.matchLabels")
        self._selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        try:
            self.cpu_limit: float | None = deployment_cpu_limit(spec)
        except ManifestError as error:
            self.cpu_limit = None
            print(f"WARNING: NO CPU LIMIT on the pods: {error}", file=sys.stderr)

    def kubectl_command(self, *args: str) -> list[str]:
        """The full ``kubectl`` command line, with the context and namespace chosen."""
        return [*self._global_args, *args]

    def _kubectl(self, *args: str, timeout: float = 120) -> str:
        command = self.kubectl_command(*args)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BackendError(f"{' '.join(command)}: {error}") from error
        if done.returncode != 0:
            raise BackendError(f"{' '.join(command)}: {done.stderr.strip()}")
        return done.stdout

    def _refuse_autoscaler(self) -> None:
        """An HPA on the Deployment would undo every ``kubectl scale`` of the sweep."""
        autoscalers = json.loads(self._kubectl("get", "hpa", "--output", "json")).get("items", [])
        for hpa in autoscalers:
            target = hpa.get("spec", {}).get("scaleTargetRef", {})
            if target.get("kind") == "Deployment" and target.get("name") == self.deployment:
                name = hpa["metadata"]["name"]
                raise BackendError(
                    f"HorizontalPodAutoscaler {name!r} scales deployment/{self.deployment} and "
                    f"would override the study's pod counts: kubectl delete hpa {name}"
                )

    def _pods(self) -> list[dict[str, Any]]:
        listing = self._kubectl("get", "pods", "--selector", self._selector, "--output", "json")
        return list(json.loads(listing).get("items", []))

    def _live_pods(self) -> list[dict[str, Any]]:
        return [pod for pod in self._pods() if not _is_terminating(pod)]

    def scale(self, replicas: int) -> None:
        """Scale, wait for the rollout, then for exactly ``replicas`` ready pods and no others.

        Terminating pods are waited out too, so the per-replica check after each point names only
        pods that were meant to serve it.
        """
        target = f"deployment/{self.deployment}"
        self._kubectl("scale", target, f"--replicas={replicas}")
        wait = f"--timeout={round(self.ready_timeout)}s"
        self._kubectl("rollout", "status", target, wait, timeout=self.ready_timeout + 30)
        deadline = time.monotonic() + self.ready_timeout
        while True:
            pods = self._pods()
            if len(pods) == replicas and all(map(_is_ready, pods)):
                return
            if time.monotonic() > deadline:
                states = {p["metadata"]["name"]: _is_ready(p) for p in pods}
                raise BackendError(f"{replicas} ready pods wanted, the cluster has {states}")
            time.sleep(1)

    def replica_names(self) -> list[str]:
        return sorted(pod["metadata"]["name"] for pod in self._live_pods())

    def readiness(self) -> dict[str, bool]:
        return {pod["metadata"]["name"]: _is_ready(pod) for pod in self._live_pods()}

    def kill(self, name: str) -> None:
        """Delete the pod at once, without a grace period, as a node loss would."""
        self._kubectl("delete", "pod", name, "--grace-period=0", "--force", "--wait=false")

    def close(self) -> None:
        """Nothing to stop: the Deployment stays at its last scale."""
