"""The kubernetes backend's kubectl conversation, against a fake kubectl that plays the cluster.

No API server can run here; the fake records every command line and answers like a Deployment
that scales at once, which is enough to pin down what the backend asks and how it reads replies.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from iweblens.study.replicas import BackendError
from iweblens.study.replicas.kubernetes import KubernetesBackend

FAKE_KUBECTL = """\
#!{python}
import json, sys
from pathlib import Path
from typing import Any

state = Path({state!r})
log = state / "calls.jsonl"
with log.open("a") as handle:
    handle.write(json.dumps(sys.argv[1:]) + "\\n")
args = [a for a in sys.argv[1:]]
while args and args[0] in ("--context", "--namespace"):
    args = args[2:]
replicas = int((state / "replicas").read_text()) if (state / "replicas").exists() else 1
if args[:2] == ["get", "deployment/iweblens"]:
    print(json.dumps({{
        "kind": "Deployment",
        "metadata": {{"name": "iweblens"}},
        "spec": {{
            "selector": {{"matchLabels": {{"app": "iweblens", "tier": "web"}}}},
            "template": {{"spec": {{"containers": [
                {{"name": "iweblens", "resources": {{"limits": {{"cpu": {cpu!r}}}}}}}
            ]}}}},
        }},
    }}))
elif args[:2] == ["get", "hpa"]:
    print(json.dumps({{"items": {autoscalers}}}))
elif args[:1] == ["scale"]:
    (state / "replicas").write_text(args[2].split("=")[1])
elif args[:2] == ["rollout", "status"]:
    print('deployment "iweblens" successfully rolled out')
elif args[:2] == ["get", "pods"]:
    pods = [
        {{"metadata": {{"name": f"iweblens-7d9f-{{i}}"}},
          "status": {{"conditions": [{{"type": "Ready", "status": "True"}}]}}}}
        for i in range(replicas)
    ]
    print(json.dumps({{"items": pods}}))
elif args[:2] == ["delete", "pod"]:
    print(f'pod "{{args[2]}}" force deleted')
else:
    sys.exit(f"fake kubectl: unexpected {{args}}")
"""


HPA = {
    "metadata": {"name": "iweblens"},
    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "iweblens"}},
}


def fake_kubectl(
    tmp_path: Path, cpu: str = "500m", autoscalers: list[dict[str, Any]] | None = None
) -> Path:
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(
        FAKE_KUBECTL.format(
            python=sys.executable, state=str(tmp_path), cpu=cpu, autoscalers=autoscalers or []
        )
    )
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IXUSR)
    return kubectl


def calls(tmp_path: Path) -> list[list[str]]:
    lines = (tmp_path / "calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake kubectl first on PATH; returns the folder holding its state and call log."""
    fake_kubectl(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path(sys.executable).parent}")
    return tmp_path


def test_scale_waits_for_rollout_and_ready_pods(cluster: Path) -> None:
    backend = KubernetesBackend(namespace="study", context="kind-iweblens", ready_timeout=60)
    assert backend.cpu_limit == 0.5
    assert backend.endpoint == "http://localhost:80/api/object_detection"
    backend.scale(3)
    assert backend.replica_names() == ["iweblens-7d9f-0", "iweblens-7d9f-1", "iweblens-7d9f-2"]
    assert backend.readiness() == {
        "iweblens-7d9f-0": True,
        "iweblens-7d9f-1": True,
        "iweblens-7d9f-2": True,
    }
    backend.kill("iweblens-7d9f-1")
    backend.close()
    scope = ["--context", "kind-iweblens", "--namespace", "study"]
    pods = [*scope, "get", "pods", "--selector", "app=iweblens,tier=web", "--output", "json"]
    assert calls(cluster) == [
        [*scope, "get", "hpa", "--output", "json"],
        [*scope, "get", "deployment/iweblens", "--output", "json"],
        [*scope, "scale", "deployment/iweblens", "--replicas=3"],
        [*scope, "rollout", "status", "deployment/iweblens", "--timeout=60s"],
        pods,
        pods,
        pods,
        [*scope, "delete", "pod", "iweblens-7d9f-1", "--grace-period=0", "--force", "--wait=false"],
    ]


def test_without_context_or_namespace_kubectl_uses_its_defaults(cluster: Path) -> None:
    backend = KubernetesBackend(endpoint="http://127.0.0.1:30080/api/object_detection")
    backend.scale(1)
    assert backend.replica_names() == ["iweblens-7d9f-0"]
    assert calls(cluster)[2] == ["scale", "deployment/iweblens", "--replicas=1"]
    assert backend.endpoint == "http://127.0.0.1:30080/api/object_detection"


def test_a_deployment_without_a_cpu_limit_is_recorded_as_unknown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_kubectl(tmp_path, cpu="")
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path(sys.executable).parent}")
    assert KubernetesBackend().cpu_limit is None
    assert "NO CPU LIMIT" in capsys.readouterr().err


def test_kubectl_failures_surface_with_the_command(cluster: Path) -> None:
    with pytest.raises(BackendError, match="deployment/other"):
        KubernetesBackend(deployment="other")


def test_an_autoscaler_on_the_deployment_stops_the_study_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_kubectl(tmp_path, autoscalers=[HPA])
    monkeypatch.setenv("PATH", f"{tmp_path}:{Path(sys.executable).parent}")
    with pytest.raises(BackendError, match="kubectl delete hpa iweblens"):
        KubernetesBackend()
    assert not any(call[:1] == ["scale"] for call in calls(tmp_path))
