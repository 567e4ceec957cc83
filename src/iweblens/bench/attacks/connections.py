"""Attacks on one pod's HTTP edge: connections and bodies that cost the attacker almost nothing.

- ``one_byte_flood``: ``IWEBLENS_MAX_CONNECTIONS`` connections that each send one byte (never idle,
  never complete): the kubelet's probes must keep answering and ordinary requests be served;
- ``declared_bodies``: raw uploads that send only headers declaring a body (together the whole
  memory budget, were declared lengths reserved), then nothing, re-opened when dropped:
  ordinary requests sent meanwhile must be served;
- ``maximal_burst``: requests with a body at the body limit, all at once, sent as ``http.client``
  sends (the whole body, then the answer is read): every one must get an answer it reads, 200 or
  503 with ``Retry-After``, never a reset;
- ``sigterm_long_job``: SIGTERM while the longest admitted job (an image at the pixel limit, the
  pod's CPU throttled once the job runs) cannot finish within the grace: its client gets a 503 and
  the process exits 0 within the pod's grace.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from iweblens.bench.attacks.floods import ConnectionFlood, flood_attack
from iweblens.bench.attacks.memory import RequestLimits, maximal_body, maximal_image
from iweblens.bench.attacks.results import AttackResult, Check
from iweblens.bench.http_client import DETECTION_PATH, multipart_body, read_metrics
from iweblens.bench.pod import running_pod
from iweblens.config import Settings
from iweblens.harness.manifest import PodSpec
from iweblens.harness.serving import LOOPBACK
from iweblens.service.front import body_charge

# The CPU left to a pod whose job must outlast the grace: the cgroup v1 minimum quota (1 ms per
# 100 ms period). The event loop needs little of it to answer and exit.
THROTTLED_CORES = 0.01
BUDGET_METRIC = "iweblens_memory_budget_bytes"


class OpeningFlood(ConnectionFlood):
    """``connections`` connections that each send ``payload`` once, then nothing; re-opened when
    the server drops them, until :meth:`stop`."""

    def __init__(self, port: int, connections: int, payload: bytes) -> None:
        self._payload = payload
        super().__init__(port, connections, trickle=False)

    def _top_up(self, open_: dict[socket.socket, int]) -> None:
        super()._top_up(open_)
        for sock, sent in open_.items():
            if sent == 0:
                with contextlib.suppress(OSError):
                    open_[sock] = sock.send(self._payload)


def _served_check(result: AttackResult) -> AttackResult:
    """``result`` with one more check: every ordinary request sent during the flood was served."""
    served, sent = result.figures["real_served"], result.figures["real_requests"]
    result.checks.append(Check("every ordinary request served (200)", 0 < served == sent))
    return result


def one_byte_flood(
    spec: PodSpec,
    images: Sequence[Path],
    *,
    connections: int | None = None,
    duration_s: float,
    baseline_s: float = 0.0,
) -> AttackResult:
    """``connections`` (default: the server's connection cap) connections of one byte each."""
    count = connections if connections is not None else Settings().max_connections
    result = flood_attack(
        spec,
        images,
        "one-byte-flood",
        lambda port: OpeningFlood(port, count, b"P"),
        duration_s=duration_s,
        baseline_s=baseline_s,
    )
    result.checks.append(Check("0 liveness restarts", result.figures["would_restart"] == 0))
    return _served_check(result)


def declared_bodies(
    spec: PodSpec,
    images: Sequence[Path],
    *,
    connections: int = 3,
    duration_s: float,
    baseline_s: float = 0.0,
) -> AttackResult:
    """Raw uploads that declare a body and send none of it, as much as the budget would hold.

    Raw: the flavour whose reservation for a declared length (twice the body) lets the most of
    them fit. Each declares an equal share of the pod's memory budget (its ``/metrics``), at
    most the body limit, and more than ``connections`` are used when the limit caps the share:
    were declared lengths reserved, they would hold the whole budget (on the Deployment's pod,
    three connections declaring 16 MiB).
    """
    limit = RequestLimits.of(spec).max_body_bytes

    def flood(port: int) -> OpeningFlood:
        budget = read_metrics(f"http://{LOOPBACK}:{port}").get(BUDGET_METRIC, 0.0)
        count = max(connections, math.ceil(budget / body_charge(limit, "image/jpeg")))
        length = min(limit, int(budget) // body_charge(count, "image/jpeg"))
        head = (
            f"POST {DETECTION_PATH} HTTP/1.1\r\nHost: {LOOPBACK}\r\n"
            f"Content-Type: image/jpeg\r\nContent-Length: {length}\r\n\r\n"
        )
        return OpeningFlood(port, count, head.encode())

    return _served_check(
        flood_attack(
            spec, images, "declared-bodies", flood, duration_s=duration_s, baseline_s=baseline_s
        )
    )


@dataclass(frozen=True)
class Answer:
    """What ``http.client`` read: the status and ``Retry-After``, or the exception it raised."""

    status: int | None
    retry_after: str | None
    error: str | None

    @property
    def acceptable(self) -> bool:
        """200, or 503 with a ``Retry-After`` of at least a second."""
        if self.status == 503:
            return self.retry_after is not None and int(self.retry_after) >= 1
        return self.status == 200

    def label(self) -> str:
        return str(self.status) if self.status is not None else str(self.error)


def post_with_http_client(port: int, content_type: str, body: bytes, timeout: float) -> Answer:
    """POST as ``http.client`` does: the whole body, then the answer is read."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request(
            "POST", DETECTION_PATH, body=body, headers={"Content-Type": content_type}
        )
        response = connection.getresponse()
        response.read()
        return Answer(response.status, response.getheader("Retry-After"), None)
    except (OSError, http.client.HTTPException) as error:
        return Answer(None, None, type(error).__name__)
    finally:
        connection.close()


def maximal_burst(
    spec: PodSpec, images: Sequence[Path], *, requests: int = 19, timeout: float = 180.0
) -> AttackResult:
    """``requests`` multipart uploads at the body limit at once, each read by ``http.client``."""
    limits = RequestLimits.of(spec)
    body = maximal_body(
        "multipart", maximal_image(images[0], limits.max_pixels), limits.max_body_bytes
    )
    with running_pod(spec, "maximal-burst") as pod:
        start = threading.Barrier(requests)
        answers: list[Answer] = []

        def client() -> None:
            start.wait()
            answers.append(post_with_http_client(pod.port, body.content_type, body.data, timeout))

        threads = [threading.Thread(target=client) for _ in range(requests)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        peak = pod.peak_memory_bytes()
        oom_kills = pod.oom_kills()
    labels = Counter(answer.label() for answer in answers)
    figures = {
        "requests": requests,
        "body_bytes": len(body.data),
        "answers": dict(labels),
        "oom_kills": oom_kills,
        "peak_memory_mib": None if peak is None else round(peak / 2**20, 1),
    }
    cell = f"{', '.join(f'{k}: {v}' for k, v in sorted(labels.items()))}; OOM kills {oom_kills}"
    checks = [
        Check(
            f"all {requests} read an answer: 200, or 503 with Retry-After",
            len(answers) == requests and all(answer.acceptable for answer in answers),
        ),
        Check("0 OOM kills", oom_kills == 0),
    ]
    return AttackResult("maximal-burst", figures, checks, cell)


def sigterm_long_job(
    spec: PodSpec, images: Sequence[Path], *, grace_s: int = 2, timeout: float = 120.0
) -> AttackResult:
    """SIGTERM while one image at the pixel limit is in inference on a throttled pod.

    The server's graceful timeout is ``grace_s``; the pod is stopped as the kubelet stops it (its
    grace after preStop, then SIGKILL), so a job that outlasts everything shows as a kill.
    """
    body = multipart_body(maximal_image(images[0], RequestLimits.of(spec).max_pixels))
    short = replace(spec, env={**spec.env, **Settings.to_env(graceful_timeout=grace_s)})
    with running_pod(short, "sigterm-long-job") as pod:
        answers: list[Answer] = []
        client = threading.Thread(
            target=lambda: answers.append(
                post_with_http_client(pod.port, body.content_type, body.data, timeout)
            )
        )
        client.start()
        deadline = time.monotonic() + timeout
        while read_metrics(pod.url).get("iweblens_queue_depth", 0) < 1:
            if time.monotonic() > deadline or not client.is_alive():
                break
            time.sleep(0.05)
        assert pod.cgroup is not None
        pod.cgroup.cpu.set_cores(THROTTLED_CORES)
        termination = pod.terminate()
        client.join()
    answer = answers[0] if answers else Answer(None, None, "no answer")
    figures = {
        "answer": answer.label(),
        "retry_after": answer.retry_after,
        "exit_code": termination.exit_code,
        "exit_after_s": round(termination.seconds, 1),
        "killed_at_grace": termination.killed,
        "grace_s": spec.stop_grace_s,
    }
    cell = (
        f"answer {answer.label()}; exit {termination.exit_code} after {termination.seconds:.1f} s"
        + (" (SIGKILL at the grace)" if termination.killed else "")
    )
    checks = [
        Check(
            "the running job's client reads a 503 with Retry-After",
            answer.status == 503 and answer.acceptable,
        ),
        Check(
            f"exit 0 within the pod's grace ({spec.stop_grace_s:g} s)",
            termination.exit_code == 0 and not termination.killed,
        ),
    ]
    return AttackResult("sigterm-long-job", figures, checks, cell)
