"""The kubelet's HTTP probes of one pod, with the manifest's settings, and what it would do.

A :class:`Prober` runs each probe of a :class:`~iweblens.harness.manifest.PodSpec` on its own
thread against a pod on loopback; each :class:`ProbeRecord` counts the failures and the restarts
(liveness) or removals from the Service (readiness) the kubelet would have made of them.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from iweblens.harness.manifest import ProbeSpec
from iweblens.harness.serving import LOOPBACK


@dataclass(frozen=True)
class ProbeResult:
    """One probe: when it started (monotonic), how long it took, its status (None: no answer)."""

    at: float
    seconds: float
    status: int | None

    @property
    def ok(self) -> bool:
        # The kubelet counts 200-399 as success; a timeout or a refused connection fails.
        return self.status is not None and 200 <= self.status < 400


@dataclass
class ProbeRecord:
    """Every result of one probe, and what the kubelet would have done about them."""

    kind: str
    spec: ProbeSpec
    results: list[ProbeResult] = field(default_factory=list)
    # Each run of ``failure_threshold`` consecutive failures: a restart for liveness, removal from
    # the Service's endpoints for readiness.
    would_act: int = 0
    _consecutive: int = 0

    def add(self, result: ProbeResult) -> None:
        self.results.append(result)
        if result.ok:
            self._consecutive = 0
            return
        self._consecutive += 1
        if self._consecutive == self.spec.failure_threshold:
            self.would_act += 1
            self._consecutive = 0  # the kubelet starts counting again after it acts

    @property
    def failures(self) -> int:
        return sum(not r.ok for r in self.results)

    def quantile(self, q: float) -> float:
        """Latency quantile in seconds (nearest rank; a failed probe counts with its duration)."""
        times = sorted(r.seconds for r in self.results)
        return times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")

    def summary(self) -> str:
        if not self.results:
            return f"{self.kind}: no probes"
        median = statistics.median(r.seconds for r in self.results)
        act = "restarts" if self.kind == "liveness" else "unready"
        return (
            f"{self.kind} {self.spec.path}: {len(self.results)} probes, {self.failures} failed, "
            f"p50 {median * 1000:.0f} ms, p99 {self.quantile(0.99) * 1000:.0f} ms, "
            f"would-{act} {self.would_act}"
        )


def probe_once(port: int, spec: ProbeSpec) -> ProbeResult:
    """One kubelet HTTP probe: a new connection, GET, at most ``timeout_s`` for all of it."""
    started = time.monotonic()
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=spec.timeout_s)
    status = None
    try:
        connection.request("GET", spec.path, headers={"Connection": "close"})
        if connection.sock is not None:
            connection.sock.settimeout(max(0.001, started + spec.timeout_s - time.monotonic()))
        response = connection.getresponse()
        response.read()
        status = response.status
    except (OSError, http.client.HTTPException):
        pass
    finally:
        connection.close()
    return ProbeResult(started, time.monotonic() - started, status)


class Prober:
    """The kubelet's probes of one pod, each on its own thread every ``period_s``.

    Started on a pod that is already ready, so ``initialDelaySeconds`` has passed.
    """

    def __init__(self, port: int, probes: Mapping[str, ProbeSpec]) -> None:
        self._port = port
        self.records = {kind: ProbeRecord(kind, spec) for kind, spec in probes.items()}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(record,), name=f"probe-{kind}", daemon=True)
            for kind, record in self.records.items()
        ]

    def __enter__(self) -> Prober:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _run(self, record: ProbeRecord) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            record.add(probe_once(self._port, record.spec))
            next_at += record.spec.period_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    @property
    def failures(self) -> int:
        return sum(record.failures for record in self.records.values())

    def quantile(self, q: float) -> float:
        """Latency quantile over every probe of every kind."""
        merged = ProbeRecord("all", ProbeSpec("*"))
        for record in self.records.values():
            merged.results.extend(record.results)
        return merged.quantile(q)

    def summary(self) -> list[str]:
        return [record.summary() for record in self.records.values()]
