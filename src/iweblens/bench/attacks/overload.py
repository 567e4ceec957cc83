"""``overload``: open-loop arrivals at 3x what the pod serves, clients that give up after 5 s.

Judged: inferences for departed clients < 10 % of all inferences, and a fresh request answered in
< 2 s sent within 5 s of the burst's end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iweblens.bench.attacks.results import (
    AttackResult,
    Check,
    counts,
    pod_figures,
    probe_figures,
    statuses_of,
)
from iweblens.bench.http_client import Body, exchange, photo_body, read_metrics
from iweblens.bench.kubelet import Prober
from iweblens.bench.pod import connection_sampler, running_pod
from iweblens.bench.soak import Outcome
from iweblens.harness.manifest import PodSpec

# /metrics samples worth keeping from an overload run (what the server shed, dropped, queued).
SERVER_FIGURES = ("shed", "dropped", "disconnect", "queue", "inference_seconds_count")


INFERENCES = "iweblens_inference_seconds_count"


def _drained_inferences(url: str, limit_s: float, settle_s: float = 5.0) -> tuple[float, float]:
    """Wait until the pod has finished its backlog; (inferences run so far, seconds waited).

    Drained: the inference count stayed the same over ``settle_s`` and nothing but this reading
    is in flight. Bounded by ``limit_s``.
    """
    started = time.monotonic()
    last = -1.0
    while time.monotonic() - started < limit_s:
        metrics = read_metrics(url)
        count = metrics.get(INFERENCES, -1.0)
        if count == last and metrics.get("iweblens_requests_in_flight", 0) <= 1:
            return count, time.monotonic() - started
        last = count
        time.sleep(settle_s)
    return last, time.monotonic() - started


def overload(
    spec: PodSpec,
    images: Sequence[Path],
    *,
    rate_per_s: float = 15.0,
    duration_s: float = 60.0,
    client_timeout_s: float = 5.0,
    recovery_answer_s: float = 2.0,
    recovery_within_s: float = 5.0,
    recovery_limit_s: float = 300.0,
    drain_limit_s: float = 600.0,
) -> AttackResult:
    """Open-loop arrivals at ``rate_per_s`` for ``duration_s``; clients leave after a timeout.

    Inferences for departed clients = every inference the pod ran (its ``/metrics``) minus every
    answer a client received: work whose answer nobody read.
    """
    bodies = [photo_body(images, index) for index in range(len(images))]
    with running_pod(spec, "overload") as pod:
        before = read_metrics(pod.url).get(INFERENCES, 0.0)
        outcomes: list[Outcome] = []
        with connection_sampler(pod) as sampler, Prober(pod.port, spec.probes) as prober:
            threads = []
            started = time.monotonic()
            arrivals = round(rate_per_s * duration_s)
            for index in range(arrivals):
                time.sleep(max(0.0, started + index / rate_per_s - time.monotonic()))
                thread = threading.Thread(
                    target=lambda i=index: outcomes.append(
                        exchange(pod.port, bodies[i % len(bodies)], client_timeout_s)
                    ),
                    daemon=True,
                )
                thread.start()
                threads.append(thread)
            burst_end = time.monotonic()
            recovery = _recover(pod.port, bodies, burst_end, recovery_answer_s, recovery_limit_s)
            for thread in threads:
                thread.join()
            after, drain_s = _drained_inferences(pod.url, drain_limit_s)
        shed_metrics = {
            name: value
            for name, value in read_metrics(pod.url).items()
            if any(word in name for word in SERVER_FIGURES)
            and not any(part in name for part in ("_bucket", "_created"))
        }
        figures = _overload_figures(outcomes, recovery, after - before, burst_end)
        figures.update(
            rate_per_s=rate_per_s,
            duration_s=duration_s,
            client_timeout_s=client_timeout_s,
            drain_s=round(drain_s, 1),
            max_held_connections=max(sampler.readings, default=0),
            server_metrics=shed_metrics,
            **probe_figures(prober),
            **pod_figures(pod),
        )
    recovered = figures["recovered_after_s"]
    checks = [
        Check("inferences for departed clients < 10 %", figures["departed_fraction"] < 0.10),
        Check(
            f"a fresh request answered < {recovery_answer_s:g} s, sent within "
            f"{recovery_within_s:g} s of the burst's end",
            recovered is not None and recovered <= recovery_within_s,
        ),
    ]
    cell = (
        f"clients got {figures['answered_200']} of {figures['arrivals']} answers "
        f"({counts(figures['statuses'])}); inferences {figures['inferences']:.0f}, for departed "
        f"clients {figures['departed']:.0f} ({figures['departed_fraction']:.0%}); recovery "
        + ("never" if recovered is None else f"{recovered:.1f} s")
        + f"; max held connections {figures['max_held_connections']}; liveness would-restart "
        f"{figures['would_restart']}"
    )
    return AttackResult("overload", figures, checks, cell)


def _recover(
    port: int, bodies: Sequence[Body], burst_end: float, answer_s: float, limit_s: float
) -> list[Outcome]:
    """Fresh requests after the burst until one is answered 200 within ``answer_s``.

    Once a second for 10 s, then every 5 s (each attempt that gives up leaves work behind on a
    server that does not notice departed clients).
    """
    attempts: list[Outcome] = []
    while time.monotonic() - burst_end < limit_s:
        attempt = exchange(port, bodies[len(attempts) % len(bodies)], answer_s)
        attempts.append(attempt)
        if attempt.status == 200:
            break
        pause = 1.0 if attempt.started - burst_end < 10 else 5.0
        time.sleep(max(0.0, attempt.started + pause - time.monotonic()))
    return attempts


def _overload_figures(
    outcomes: Sequence[Outcome], recovery: Sequence[Outcome], inferences: float, burst_end: float
) -> dict[str, Any]:
    answered = sum(o.ok for o in outcomes) + sum(o.ok for o in recovery)
    departed = max(0.0, inferences - answered)
    recovered = next((r for r in recovery if r.ok), None)
    return {
        "arrivals": len(outcomes),
        "statuses": dict(statuses_of(outcomes)),
        "answered_200": sum(o.ok for o in outcomes),
        "recovery_attempts": len(recovery),
        "inferences": inferences,
        "departed": departed,
        "departed_fraction": departed / inferences if inferences > 0 else 0.0,
        "recovered_after_s": None if recovered is None else round(recovered.started - burst_end, 2),
        "recovery_answer_s": None
        if recovered is None
        else round(recovered.ended - recovered.started, 2),
    }
