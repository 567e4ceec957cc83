"""The pod harness itself: the server runs inside the manifest's limits, the kubelet-like prober
counts what the kubelet counts, and nothing is left behind."""

from __future__ import annotations

import socket
import time

from iweblens.bench.kubelet import Prober, ProbeRecord, ProbeResult, probe_once
from iweblens.bench.pod import Pod
from iweblens.harness.manifest import PodSpec, ProbeSpec
from iweblens.harness.serving import LOOPBACK, free_port


def test_a_pod_serves_inside_its_limits_and_leaves_no_cgroup(pod_spec: PodSpec) -> None:
    with Pod(pod_spec, name="harness") as pod:
        pod.wait_ready()
        assert pod.cgroup is not None
        folders = [pod.cgroup.cpu.path, pod.cgroup.memory.path]
        assert pod.pid in pod.pids()
        assert pod.cgroup.cpu.quota_cores() == pod_spec.cpu_cores
        assert pod.cgroup.memory.limit_bytes() == pod_spec.memory_bytes
        readiness = pod_spec.probes["readiness"]
        with Prober(pod.port, pod_spec.probes) as prober:
            time.sleep(2 * readiness.period_s + 0.5)
        assert prober.failures == 0, prober.summary()
        assert len(prober.records["readiness"].results) >= 2
        assert all(record.results for record in prober.records.values())
        # A silent connection the server has accepted is held by one of the pod's processes.
        with socket.create_connection((LOOPBACK, pod.port)):
            deadline = time.monotonic() + 10
            while pod.held_connections() < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert pod.held_connections() >= 1
        peak = pod.peak_memory_bytes()
        assert peak is not None and 0 < peak <= pod_spec.memory_bytes
        assert pod.oom_kills() == 0
        termination = pod.terminate()
        assert (termination.exit_code, termination.killed) == (0, False), pod.log_tail()
    assert not any(folder.exists() for folder in folders)


def test_the_kubelet_acts_after_failure_threshold_consecutive_failures() -> None:
    record = ProbeRecord("liveness", ProbeSpec("/healthz", failure_threshold=3))
    for status in (None, None, 200, None, None, None, None, None, None, 503):
        record.add(ProbeResult(0.0, 0.1, status))
    # 2 failures then a success (no restart); then 6 in a row: two restarts; then 1 more failure.
    assert (record.failures, record.would_act) == (9, 2)


def test_a_probe_of_a_closed_port_fails_without_waiting() -> None:
    result = probe_once(free_port(), ProbeSpec("/healthz", timeout_s=5))
    assert not result.ok
    assert result.status is None
