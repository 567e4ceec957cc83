"""SIGTERM under a 32-client load: accepted requests answered, the rest refused, prompt exit."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

from support import ServerProcess

from iweblens.bench.soak import LOST, REFUSED, ClosedLoop, Outcome
from iweblens.config import Settings

CLIENTS = 32
WARM_REQUESTS = 64  # let the load reach its steady state before the signal


def describe(outcomes: list[Outcome], signalled: float) -> Counter[str]:
    """Each request's fate relative to the signal."""
    fates: Counter[str] = Counter()
    for outcome in outcomes:
        when = (
            "before"
            if outcome.ended < signalled
            else "in flight"
            if outcome.started < signalled
            else "after"
        )
        fates[f"{when}: {outcome.status or outcome.failure}"] += 1
    return fates


def test_sigterm_during_a_32_thread_load_loses_nothing(
    model_paths: object, coco128: list[Path]
) -> None:
    server = ServerProcess(served_by="draining")
    try:
        server.wait_ready()
        load = ClosedLoop(
            f"{server.url}/api/object_detection", coco128, CLIENTS, stop_when_refused=True
        ).start()
        while load.completed() < WARM_REQUESTS:
            time.sleep(0.05)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        exit_code = server.process.wait(timeout=Settings().graceful_timeout + 30)
        exited_after = time.monotonic() - signalled
        outcomes = load.join()
    finally:
        server.stop()
    fates = describe(outcomes, signalled)
    in_flight = sum(count for fate, count in fates.items() if fate.startswith("in flight"))
    print(
        f"\nSIGTERM after {WARM_REQUESTS} answers, {CLIENTS} clients: {len(outcomes)} requests, "
        f"{in_flight} in flight at the signal; exit {exit_code} after {exited_after:.1f} s; "
        + ", ".join(f"{fate} {count}" for fate, count in sorted(fates.items()))
    )
    answered = [o for o in outcomes if o.status is not None]
    assert all(o.status == 200 for o in answered), Counter(o.status for o in answered)
    assert not [o for o in outcomes if o.failure == LOST]
    # Every client ends on a refused connection, after the signal: a clean, retryable failure.
    refused = [o for o in outcomes if o.failure == REFUSED]
    assert len(refused) == CLIENTS
    assert all(o.started >= signalled for o in refused)
    assert in_flight > 0  # the signal really landed under load
    assert exit_code == 0
    assert exited_after < Settings().graceful_timeout
