"""``cpu-over-memory``: a 2-CPU quota with the same memory: ready, no OOM kill (or a clean exit)."""

from __future__ import annotations

import time
from dataclasses import replace

from iweblens.bench.attacks.results import AttackResult, Check, pod_figures
from iweblens.bench.pod import Pod
from iweblens.harness.manifest import PodSpec
from iweblens.harness.serving import LOOPBACK, replica_is_ready


def cpu_over_memory(spec: PodSpec, *, cores: float = 2.0, watch_s: float = 45.0) -> AttackResult:
    """The manifest's memory with ``cores`` CPUs: ready without OOM kills, or exits non-zero."""
    bigger = replace(spec, cpu_cores=cores)
    with Pod(bigger, name="cpu-over-memory") as pod:
        started = time.monotonic()
        ready_after = None
        while time.monotonic() - started < watch_s and pod.alive:
            if ready_after is None and replica_is_ready(LOOPBACK, pod.port):
                ready_after = time.monotonic() - started
            time.sleep(0.5)
        exit_code = pod.process.poll() if pod.process is not None else None
        figures = {
            "cores": cores,
            "watched_s": watch_s,
            "ready_after_s": None if ready_after is None else round(ready_after, 1),
            "exit_code": exit_code,
            **pod_figures(pod),
        }
        notes = [line for line in pod.log().splitlines() if "network" in line.lower()][-3:]
    state = (
        f"ready after {figures['ready_after_s']} s"
        if ready_after is not None
        else f"exited with {exit_code}"
        if exit_code is not None
        else f"not ready in {watch_s:g} s, still running"
    )
    limits = f"{cores:g} CPU, {figures['memory_limit_mib']:.0f} MiB"
    cell = f"{limits}: {state}; OOM kills {figures['oom_kills']}"
    checks = [
        Check("0 OOM kills", figures["oom_kills"] == 0),
        Check("ready, or exits non-zero", ready_after is not None or exit_code not in (None, 0)),
    ]
    return AttackResult("cpu-over-memory", figures, checks, cell, notes)
