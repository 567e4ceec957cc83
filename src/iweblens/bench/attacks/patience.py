"""Impatient clients among patient ones: can a few short timeouts teach admission to refuse all?

Admission learns how long clients wait from those it sees leave while queued
(``iweblens.service.admission``). Frigate's DeepStack detector gives up after 0.1 s, a real
client timeout no half-core pod can meet (one inference spans two CPU periods). A trickle of
such clients must not set the patience for everyone: the patient clients beside them are served.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from iweblens.bench.soak import ClosedLoop, Outcome
from iweblens.bench.stress import (
    DETECTION_PATH,
    AttackResult,
    Body,
    Check,
    exchange,
    multipart_body,
    read_metrics,
    running_pod,
    statuses_of,
)
from iweblens.study.replicas.manifest import PodSpec

# Frigate's ``api_timeout`` and the side of the model-input crop it posts.
FRIGATE_TIMEOUT_S = 0.1
FRIGATE_CROP = 320
CROPS = 8  # distinct regions, cycled


def frigate_crop(photo: Path) -> Body:
    """The centre ``FRIGATE_CROP`` square of ``photo``, as the JPEG Frigate posts per region."""
    with Image.open(photo) as source:
        rgb = source.convert("RGB")
        left, top = (rgb.width - FRIGATE_CROP) // 2, (rgb.height - FRIGATE_CROP) // 2
        crop = rgb.crop((left, top, left + FRIGATE_CROP, top + FRIGATE_CROP))
    output = io.BytesIO()
    crop.save(output, "JPEG", quality=90)
    return multipart_body(output.getvalue(), "region.jpg")


def impatient_clients(
    spec: PodSpec,
    images: Sequence[Path],
    *,
    impatient_per_s: float = 0.4,
    patient_clients: int = 2,
    duration_s: float = 30.0,
    patient_timeout_s: float = 60.0,
) -> AttackResult:
    """``impatient_per_s`` open-loop Frigate requests (0.1 s timeout, each on a new connection)
    for ``duration_s``, beside ``patient_clients`` closed-loop reference clients.

    Checks: every patient request is answered 200; no OOM kill. How many impatient requests got
    an answer in time is reported, not judged (a half-core pod answers none within 0.1 s).
    """
    crops = [frigate_crop(images[index % len(images)]) for index in range(CROPS)]
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
                target=lambda body=crops[index % CROPS]: impatient.append(
                    exchange(pod.port, body, FRIGATE_TIMEOUT_S)
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
        "patient_clients": patient_clients,
        "patient_requests": len(served),
        "patient_statuses": dict(patient_statuses),
        "impatient_requests": len(impatient),
        "impatient_statuses": dict(statuses_of(impatient)),
        "wait_limit_s": after.get("iweblens_queue_wait_limit_seconds"),
        "server_counters": {
            name: value - before.get(name, 0.0)
            for name, value in after.items()
            if name.startswith(("iweblens_shed_total", "iweblens_dropped_before_inference_total"))
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
