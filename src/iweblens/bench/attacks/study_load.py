"""``study-load``: not an attack but the assignment's study on one pod (32 reference clients over
the photographs, no retry): 0 errors, which shedding must not break."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from iweblens.bench.attacks.results import AttackResult, Check, pod_figures
from iweblens.bench.http_client import DETECTION_PATH, read_metrics
from iweblens.bench.pod import running_pod
from iweblens.harness.manifest import PodSpec


def study_load(
    spec: PodSpec, images: Sequence[Path], *, clients: int = 32, requests: int = 128
) -> AttackResult:
    """The assignment's study on one pod: ``clients`` reference-client threads, ``requests``
    photographs (the 128 of the study, or fewer photographs cycled).

    Not an attack: the load the service exists for, which shedding must leave error-free (the
    reference client never retries).
    """
    from iweblens.load.client import run_load

    with running_pod(spec, "study-load") as pod:
        photographs = [images[index % len(images)] for index in range(requests)]
        endpoint = f"{pod.url}{DETECTION_PATH}"
        result = run_load(photographs, endpoint, clients, timeout=120, progress=False)
        figures = {
            "clients": clients,
            "images": result.images,
            "errors": result.errors,
            "timeouts": result.timeouts,
            "mean_s": round(result.mean_s, 2),
            "p99_s": round(result.p99_s, 2),
            "shed": {
                name: value
                for name, value in read_metrics(pod.url).items()
                if name.startswith("iweblens_shed_total")
            },
            **pod_figures(pod),
        }
    cell = (
        f"{clients} clients x {result.images} images: errors {result.errors}, timeouts "
        f"{result.timeouts}; mean {result.mean_s:.1f} s, p99 {result.p99_s:.1f} s"
    )
    checks = [Check("0 errors", result.errors == 0 and result.timeouts == 0)]
    return AttackResult("study-load", figures, checks, cell)
