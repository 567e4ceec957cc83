"""Impatient clients among patient ones: can a few short timeouts teach admission to refuse all?

Admission learns how long clients wait from those it sees leave while queued
(``iweblens.service.admission``). Some real clients give up after 0.1 s (Frigate's DeepStack
detector), a timeout no half-core pod can meet (one inference spans two CPU periods). A trickle of
such clients must not set the patience for everyone: the patient clients beside them are served.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from iweblens.bench.attacks.results import AttackResult, Check, statuses_of
from iweblens.bench.http_client import DETECTION_PATH, exchange, photo_body, read_metrics
from iweblens.bench.pod import running_pod
from iweblens.bench.soak import ClosedLoop, Outcome
from iweblens.harness.manifest import PodSpec

# The counters whose growth over the run is reported: what admission refused and dropped.
ADMISSION_COUNTERS = ("iweblens_shed_total", "iweblens_dropped_before_inference_total")


def impatient_clients(
    spec: PodSpec,
    images: Sequence[Path],
    *,
    impatient_per_s: float = 0.4,
    impatient_timeout_s: float = 0.1,
    patient_clients: int = 2,
    duration_s: float = 30.0,
    patient_timeout_s: float = 60.0,
) -> AttackResult:
    """``impatient_per_s`` open-loop requests that hang up after ``impatient_timeout_s`` (each on
    a new connection) for ``duration_s``, beside ``patient_clients`` closed-loop reference clients.

    Checks: every patient request is answered 200; no OOM kill. How many impatient requests got
    an answer in time is reported, not judged (a half-core pod answers none within 0.1 s).
    """
    bodies = [photo_body(images, index) for index in range(len(images))]
    with running_pod(spec, "impatient-clients") as pod:
        before = read_metrics(pod.url)
        patient = ClosedLoop(
            f"{pod.url}{DETECTION_PATH}", images, patient_clients, timeout=patient_timeout_s
        ).start()
        impatient: list[Outcome] = []
        threads = []
        started = time.monotonic()
        for index in range(round(impatient_per_s * duration_s)):
            time.sleep(max(0.0, started + index / impatient_per_s - time.monotonic()))
            thread = threading.Thread(
                target=lambda i=index: impatient.append(
                    exchange(pod.port, bodies[i % len(bodies)], impatient_timeout_s)
                ),
                daemon=True,
            )
            thread.start()
            threads.append(thread)
        time.sleep(max(0.0, started + duration_s - time.monotonic()))
        served = patient.stop()
        for thread in threads:
            thread.join()
        after = read_metrics(pod.url)
        oom_kills = pod.oom_kills()
    patient_statuses = statuses_of(served)
    figures = {
        "duration_s": duration_s,
        "impatient_per_s": impatient_per_s,
        "impatient_timeout_s": impatient_timeout_s,
        "patient_clients": patient_clients,
        "patient_requests": len(served),
        "patient_statuses": dict(patient_statuses),
        "impatient_requests": len(impatient),
        "impatient_statuses": dict(statuses_of(impatient)),
        "wait_limit_s": after.get("iweblens_queue_wait_limit_seconds"),
        "admission_counters": {
            name: value - before.get(name, 0.0)
            for name, value in after.items()
            if name.startswith(ADMISSION_COUNTERS)
        },
        "oom_kills": oom_kills,
    }
    answered = patient_statuses.get("200", 0)
    checks = [
        Check("every patient request answered 200", served != [] and answered == len(served)),
        Check("0 OOM kills", oom_kills == 0),
    ]
    cell = (
        f"patient clients got {answered} of {len(served)} answers; "
        f"{len(impatient)} impatient requests ({figures['impatient_statuses']}); "
        f"wait limit at the end {figures['wait_limit_s']} s"
    )
    return AttackResult("impatient-clients", figures, checks, cell)
