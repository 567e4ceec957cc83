"""``sigterm``: SIGTERM with 200 requests accepted: every one answered (200, or a 503)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from iweblens.bench.attacks.results import AttackResult, Check, counts, pod_figures, statuses_of
from iweblens.bench.http_client import exchange, photo_body
from iweblens.bench.pod import running_pod
from iweblens.bench.soak import REFUSED, Outcome
from iweblens.config import Settings
from iweblens.harness.manifest import PodSpec

# A shutdown 503 this soon after SIGTERM lets a client or balancer retry elsewhere in good time.
PROMPT_503_S = 2.0


# Admission limits that let the server take 200 photographs into its queue (SIGTERM attack): at
# ~0.2-0.3 s each on half a core they are 40-60 s of work, over the default wait limit, and their
# bodies and the memory the allocator retains come close to the default budget of a 512 MiB pod.
DEEP_QUEUE_ENV = Settings.to_env(max_wait=600, memory_budget=200 * 2**20)


def sigterm(
    spec: PodSpec,
    images: Sequence[Path],
    *,
    accepted: int = 200,
    accept_wait_s: float = 60.0,
) -> AttackResult:
    """SIGTERM once the server has accepted all ``accepted`` requests; count those unanswered.

    Accepted: held by the server's processes (``Pod.held_connections``, from the kernel's tables)
    or already served; connections still in the backlog are not counted, since closing the
    listener refuses them cleanly. The pod is stopped as the kubelet stops it (SIGKILL once the
    grace after preStop is over). How promptly the shutdown 503s come is reported, not judged.

    The server's admission limits are raised (:data:`DEEP_QUEUE_ENV`) so that it admits all of
    them: this attack is about the shutdown of a deep queue, which the defaults do not let build.
    """
    bodies = [photo_body(images, index) for index in range(len(images))]
    spec = replace(spec, env={**spec.env, **DEEP_QUEUE_ENV})
    with running_pod(spec, "sigterm") as pod:
        sent: list[float] = []  # list.append is atomic: one entry per request sent in full
        outcomes: list[Outcome] = []
        timeout = spec.stop_grace_s + 60

        def client(index: int) -> None:
            body = bodies[index % len(bodies)]
            outcomes.append(exchange(pod.port, body, timeout, lambda: sent.append(0.0)))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(accepted)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + accept_wait_s
        held = pod.held_connections()
        while held + len(outcomes) < accepted and time.monotonic() < deadline:
            time.sleep(0.05)
            held = pod.held_connections()
        answered_before = len(outcomes)
        served_before = sum(o.ok for o in outcomes)
        sent_in_full = len(sent)
        signalled = time.monotonic()
        termination = pod.terminate()
        for thread in threads:
            thread.join()
        figures_pod = pod_figures(pod)
    statuses = statuses_of(outcomes)
    unanswered = sum(o.status is None and o.failure != REFUSED for o in outcomes)
    shed_after = sorted(o.ended - signalled for o in outcomes if o.status == 503)
    prompt = sum(seconds <= PROMPT_503_S for seconds in shed_after)
    figures = {
        "requests": accepted,
        "held_at_signal": held,
        "sent_in_full_at_signal": sent_in_full,
        "answered_before_signal": answered_before,
        "statuses": dict(statuses),
        "unanswered": unanswered,
        "prompt_503": prompt,
        "median_503_after_signal_s": round(shed_after[len(shed_after) // 2], 2)
        if shed_after
        else None,
        "last_503_after_signal_s": round(shed_after[-1], 2) if shed_after else None,
        "exit_code": termination.exit_code,
        "exit_after_s": round(termination.seconds, 1),
        "killed_at_grace": termination.killed,
        "grace_s": spec.stop_grace_s,
        **figures_pod,
    }
    cell = (
        f"{held} held at the signal ({answered_before} answered before); {counts(statuses)}; "
        f"without an answer {unanswered}"
        + (
            f"; 503s within {PROMPT_503_S:g} s of the signal: {prompt} of {len(shed_after)}, "
            f"last after {shed_after[-1]:.1f} s"
            if shed_after
            else ""
        )
        + f"; exit {termination.exit_code} after {termination.seconds:.1f} s"
        + (" (SIGKILL at the grace)" if termination.killed else "")
    )
    checks = [
        Check(
            f"{accepted} requests accepted at the signal (held, or served)",
            held + served_before >= accepted and served_before == answered_before,
        ),
        Check("0 requests without an answer", unanswered == 0),
    ]
    return AttackResult("sigterm", figures, checks, cell)
