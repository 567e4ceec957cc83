"""Attacks on a pod's memory: the costliest image and the largest bodies the limits let in.

- ``one-max-image``: one image at the pixel limit, alone: served, and the pod's peak memory;
- ``max-bodies``: 64 concurrent requests at the body limit in every flavour (multipart, raw, base64
  JSON, double-encoded JSON): 0 OOM kills, every request answered 200/413/429/503, the next good
  request 200.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from iweblens.bench.attacks.results import (
    AttackResult,
    Check,
    counts,
    pod_figures,
    probe_figures,
    statuses_of,
)
from iweblens.bench.http_client import FLAVOURS, Body, exchange, multipart_body, photo_body
from iweblens.bench.kubelet import Prober
from iweblens.bench.pod import running_pod
from iweblens.bench.soak import Outcome
from iweblens.harness.manifest import PodSpec

SHED_STATUSES = (413, 429, 503)


def maximal_image(photo: Path, max_pixels: int) -> bytes:
    """``photo`` scaled to the pixel limit in a camera's 4:3, as a JPEG: the costliest decode."""
    width = int((max_pixels * 4 / 3) ** 0.5)
    with Image.open(photo) as source:
        scaled = source.convert("RGB").resize((width, max_pixels // width))
    output = io.BytesIO()
    scaled.save(output, "JPEG", quality=90)
    return output.getvalue()


def maximal_body(flavour: str, image: bytes, body_limit: int) -> Body:
    """A ``flavour`` request with a body just under ``body_limit``: ``image``, padded after its end.

    Decoders stop at the JPEG end marker, so the padded image still decodes (and is as costly as
    the image); the padding makes the body, and every copy the server keeps of it, maximal.
    """
    make = FLAVOURS[flavour]
    envelope = len(make(b"").data)
    room = body_limit - envelope - 16
    if flavour.startswith("json"):
        room = room // 4 * 3  # base64 turns 3 bytes into 4 characters
    if room < len(image):
        raise ValueError(f"a {len(image)}-byte image does not fit a {body_limit}-byte body")
    return make(image + bytes(room - len(image)))


@dataclass(frozen=True)
class RequestLimits:
    """The body and pixel limits of the server a pod runs (its code, its environment)."""

    max_body_bytes: int
    max_pixels: int

    @classmethod
    def of(cls, spec: PodSpec) -> RequestLimits:
        """Asked of the server's own code, run with the pod's environment: a pod may run another
        checkout (``PYTHONPATH`` in ``spec.env``) with other defaults than the harness's."""
        script = (
            "import json; from iweblens.config import Settings; s = Settings.from_env(); "
            "print(json.dumps([s.max_body_bytes, s.max_pixels]))"
        )
        output = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, **spec.env},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return cls(*json.loads(output))


def one_max_image(spec: PodSpec, images: Sequence[Path]) -> AttackResult:
    """One request with an image at the pixel limit, alone on a fresh pod: its peak memory."""
    image = maximal_image(images[0], RequestLimits.of(spec).max_pixels)
    with running_pod(spec, "one-max-image") as pod:
        outcome = exchange(pod.port, multipart_body(image), timeout=120)
        time.sleep(0.5)
        figures = {"status": outcome.status or outcome.failure, **pod_figures(pod)}
    cell = (
        f"{figures['status']}; peak {figures['peak_memory_mib']} of "
        f"{figures['memory_limit_mib']:.0f} MiB; OOM kills {figures['oom_kills']}"
    )
    checks = [
        Check("an image at the pixel limit is served (200)", outcome.status == 200),
        Check("0 OOM kills", figures["oom_kills"] == 0),
    ]
    return AttackResult("one-max-image", figures, checks, cell)


def max_bodies(
    spec: PodSpec,
    images: Sequence[Path],
    *,
    concurrency: int = 64,
    timeout: float = 180.0,
) -> AttackResult:
    """``concurrency`` requests at the body limit at once, the four flavours in turn."""
    limits = RequestLimits.of(spec)
    image = maximal_image(images[0], limits.max_pixels)
    bodies = [maximal_body(flavour, image, limits.max_body_bytes) for flavour in FLAVOURS]
    with running_pod(spec, "max-bodies") as pod, Prober(pod.port, spec.probes) as prober:
        start = threading.Barrier(concurrency)
        outcomes: list[Outcome] = []

        def client(index: int) -> None:
            start.wait()
            outcomes.append(exchange(pod.port, bodies[index % len(bodies)], timeout))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        next_good = exchange(pod.port, photo_body(images, 1), timeout=60)
        statuses = statuses_of(outcomes)
        figures = {
            "requests": concurrency,
            "body_bytes": [len(body.data) for body in bodies],
            "statuses": dict(statuses),
            "next_good": next_good.status or next_good.failure,
            "next_good_s": round(next_good.ended - next_good.started, 2),
            **pod_figures(pod),
            **probe_figures(prober),
        }
    answered = sum(statuses.get(str(code), 0) for code in (200, *SHED_STATUSES))
    cell = (
        f"OOM kills {figures['oom_kills']}; {counts(statuses)}; peak "
        f"{figures['peak_memory_mib']} MiB; next good request {figures['next_good']}"
    )
    checks = [
        Check("0 OOM kills", figures["oom_kills"] == 0),
        Check("every request answered 200/413/429/503", answered == concurrency),
        Check("the next good request 200", next_good.status == 200),
    ]
    return AttackResult("max-bodies", figures, checks, cell)
