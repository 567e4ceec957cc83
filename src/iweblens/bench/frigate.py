"""``iweblens frigate``: Frigate's DeepStack detector replayed against one imitated pod.

Frigate's ``deepstack`` detector POSTs, for every region of every frame, a JPEG of the model-input
crop (320 x 320 by default) as the multipart file part ``image`` with a form field ``api_key`` to
``/v1/vision/detection``, one request in flight per detector, each on a new connection, and gives
up after ``api_timeout`` (0.1 s by default, connect and read together). This replays that: the crops
are the centre squares of the photographs resized to the crop size (JPEG quality 90), requests are
due at Poisson arrival times (strictly periodic ones phase-lock with the CFS quota's 100 ms
period, which made back-to-back runs of the same server read 0 % and 95 % in time), and a request
due while the previous one is still in flight starts when it ends, as Frigate's detector would.

Each profile (a set of ``IWEBLENS_*`` variables) runs on a fresh :class:`~iweblens.bench.pod.Pod`
with the Deployment's limits; the run counts the requests answered 200 within the timeout, refused
(any other answer within it), not answered in time (the client left) and failed (no connection),
with the latency quantiles of the 200s.
"""

from __future__ import annotations

import dataclasses
import io
import random
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from iweblens.bench.http_client import GAVE_UP, Body, exchange, multipart_body
from iweblens.bench.pod import running_pod
from iweblens.bench.soak import Outcome
from iweblens.harness.manifest import PodSpec

FRIGATE_PATH = "/v1/vision/detection"
FRIGATE_TIMEOUT_S = 0.1
CROP_SIDE = 320
CROP_QUALITY = 90
# Requests before the measured ones, so that the first measured one meets a warm server.
WARM_UP_REQUESTS = 10
FATES = IN_TIME, REFUSED, LATE, FAILED = "in time", "refused", "late", "failed"
# The share of requests Frigate must get in time for a profile to count as meeting its deadline.
IN_TIME_GOAL = 0.99


def camera_crop(photo: Path, side: int = CROP_SIDE) -> bytes:
    """The centre square of ``photo`` resized to ``side`` x ``side``, as a JPEG (quality 90)."""
    with Image.open(photo) as image:
        rgb = image.convert("RGB")
    short = min(rgb.size)
    left, top = (rgb.width - short) // 2, (rgb.height - short) // 2
    square = rgb.crop((left, top, left + short, top + short)).resize((side, side))
    out = io.BytesIO()
    square.save(out, "JPEG", quality=CROP_QUALITY)
    return out.getvalue()


def frigate_body(crop: bytes, api_key: str = "") -> Body:
    """The multipart body Frigate sends: the file part ``image`` and the field ``api_key``."""
    return multipart_body(crop, "image.jpg", fields={"api_key": api_key})


def poisson_arrivals(rate: float, count: int, seed: int) -> list[float]:
    """``count`` arrival offsets in seconds from the start, ``rate`` a second on average."""
    draw = random.Random(seed)
    offsets: list[float] = []
    now = 0.0
    for _ in range(count):
        now += draw.expovariate(rate)
        offsets.append(now)
    return offsets


@dataclass(frozen=True)
class FrigateRun:
    """One profile's replay: what Frigate would have seen of each request."""

    profile: str
    rate: float
    outcomes: tuple[Outcome, ...]
    timeout: float = FRIGATE_TIMEOUT_S

    def fate(self, outcome: Outcome) -> str:
        """``in time`` (200 within the timeout), ``refused`` (any other answer), ``late``
        (the client left first), or ``failed`` (no answer: not connected, or closed)."""
        if outcome.status == 200:
            return IN_TIME if outcome.ended - outcome.started <= self.timeout else LATE
        if outcome.status is not None:
            return REFUSED
        return LATE if outcome.failure == GAVE_UP else FAILED

    def count(self, fate: str) -> int:
        return sum(self.fate(o) == fate for o in self.outcomes)

    @property
    def in_time(self) -> int:
        return self.count(IN_TIME)

    @property
    def share_in_time(self) -> float:
        return self.in_time / len(self.outcomes) if self.outcomes else 0.0

    def latency_ms(self, quantile: float) -> float | None:
        """A quantile of the 200s' latency (connect to last byte), in milliseconds."""
        answered = sorted(o.ended - o.started for o in self.outcomes if o.status == 200)
        if not answered:
            return None
        if len(answered) == 1:
            return answered[0] * 1000
        cuts = statistics.quantiles(answered, n=100, method="inclusive")
        return cuts[max(0, min(98, round(quantile * 100) - 1))] * 1000

    def line(self) -> str:
        def ms(quantile: float) -> str:
            value = self.latency_ms(quantile)
            return "-" if value is None else f"{value:.0f}"

        return (
            f"| {self.profile} | {self.rate:g} | {len(self.outcomes)} | "
            f"{self.in_time} ({100 * self.share_in_time:.1f} %) | {self.count(REFUSED)} | "
            f"{self.count(LATE)} | {self.count(FAILED)} | {ms(0.5)} / {ms(0.95)} / {ms(0.99)} |"
        )


TABLE_HEAD = (
    "| profile | requests/s | sent | 200 within 0.1 s | refused | not in time | failed "
    "| p50 / p95 / p99 of 200s (ms) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
)


def replay(
    port: int,
    bodies: Sequence[Body],
    arrivals: Sequence[float],
    *,
    timeout: float = FRIGATE_TIMEOUT_S,
) -> list[Outcome]:
    """Send one body per arrival, one in flight at a time, each on a new connection."""
    start = time.monotonic()
    outcomes: list[Outcome] = []
    for index, offset in enumerate(arrivals):
        delay = start + offset - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        body = bodies[index % len(bodies)]
        outcomes.append(exchange(port, body, timeout, path=FRIGATE_PATH))
    return outcomes


def frigate(
    spec: PodSpec,
    photos: Sequence[Path],
    profiles: Mapping[str, Mapping[str, str]],
    *,
    rate: float = 5.0,
    count: int = 600,
    seed: int = 0,
) -> list[FrigateRun]:
    """Replay ``count`` Frigate requests at ``rate`` a second against a fresh pod per profile.

    ``profiles`` maps a name to the ``IWEBLENS_*`` variables it sets on top of the manifest's.
    The same crops and arrival times are used for every profile.
    """
    bodies = [frigate_body(camera_crop(photo)) for photo in photos]
    arrivals = poisson_arrivals(rate, count, seed)
    runs = []
    for name, env in profiles.items():
        pod_spec = dataclasses.replace(spec, env={**spec.env, **env})
        with running_pod(pod_spec, f"frigate-{name}") as pod:
            replay(pod.port, bodies, poisson_arrivals(rate, WARM_UP_REQUESTS, seed + 1))
            runs.append(FrigateRun(name, rate, tuple(replay(pod.port, bodies, arrivals))))
    return runs


def report(runs: Sequence[FrigateRun]) -> list[str]:
    """The runs as a Markdown table, and which profiles met the goal."""
    lines = [*TABLE_HEAD, *(run.line() for run in runs), ""]
    for run in runs:
        verdict = "meets" if run.share_in_time >= IN_TIME_GOAL else "misses"
        lines.append(
            f"- {run.profile}: {verdict} the goal of {100 * IN_TIME_GOAL:g} % in time at "
            f"{run.rate:g} requests/s"
        )
    return lines
