"""What an attack returns: its figures, a check per outcome it must meet, its table cell.

Also the figures every attack reports alike: the statuses its clients got, the pod's memory and
OOM kills (:func:`pod_figures`), the kubelet's probes (:func:`probe_figures`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from iweblens.bench.kubelet import Prober
from iweblens.bench.pod import MIB, Pod
from iweblens.bench.soak import Outcome


@dataclass(frozen=True)
class Check:
    """One outcome the attack must meet, and whether this run met it."""

    outcome: str
    passed: bool


@dataclass
class AttackResult:
    """The figures of one attack, its checks, and the one-line cell of the before/after table."""

    attack: str
    figures: dict[str, Any]
    checks: list[Check]
    cell: str
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.passed for check in self.checks)

    def lines(self) -> list[str]:
        verdicts = "; ".join(f"{'PASS' if c.passed else 'FAIL'} {c.outcome}" for c in self.checks)
        return [f"{self.attack}: {self.cell}", f"  {verdicts}", *(f"  {n}" for n in self.notes)]


def statuses_of(outcomes: Sequence[Outcome]) -> Counter[str]:
    return Counter(str(o.status) if o.status is not None else str(o.failure) for o in outcomes)


def counts(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{key}: {value}" for key, value in sorted(counter.items()))


def probe_figures(prober: Prober) -> dict[str, Any]:
    return {
        "probe_failures": prober.failures,
        "probe_p99_s": round(prober.quantile(0.99), 3),
        "probes": prober.summary(),
        "would_restart": prober.records["liveness"].would_act
        if "liveness" in prober.records
        else 0,
    }


def pod_figures(pod: Pod) -> dict[str, Any]:
    peak = pod.peak_memory_bytes()
    return {
        "oom_kills": pod.oom_kills(),
        "peak_memory_mib": None if peak is None else round(peak / MIB, 1),
        "memory_limit_mib": round(pod.spec.memory_bytes / MIB, 1),
    }
