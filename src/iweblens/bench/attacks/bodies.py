"""Hostile JSON bodies: documents cheap to send and costly to parse, sent to one imitated pod.

Each body is a valid detection request (a real photograph in ``image``) with one more member the
service does not use: either megabytes of tiny nested arrays (every ``[]`` would become a Python
list of ~56 bytes, dozens of times the body) or arrays nested a thousand deep (past Python's
recursion limit). The service must answer 400 without building either, and stay ready.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from iweblens.bench.attacks.results import (
    AttackResult,
    Check,
    pod_figures,
    probe_figures,
    statuses_of,
)
from iweblens.bench.http_client import Body, exchange, photo_body
from iweblens.bench.kubelet import Prober
from iweblens.bench.pod import MIB, connection_sampler, running_pod
from iweblens.bench.soak import Outcome
from iweblens.harness.manifest import PodSpec

NESTED_ARRAYS = "[[[]]],"  # three lists in seven bytes


def json_with_member(image: bytes, member: str) -> Body:
    """``{"id", "image"}`` as the JSON client sends it, plus ``"padding": <member>`` (raw JSON)."""
    encoded = base64.b64encode(image).decode("ascii")
    head = json.dumps({"id": "attack", "image": encoded})[:-1]
    return Body("application/json", f'{head}, "padding": {member}}}'.encode(), "json")


def many_nested_arrays(image: bytes, body_bytes: int) -> Body:
    """A body of ``body_bytes`` whose unused member is that many bytes of ``[[[]]],`` groups."""
    room = body_bytes - len(json_with_member(image, "[]").data)
    groups = max(room // len(NESTED_ARRAYS), 1)
    return json_with_member(image, "[" + (NESTED_ARRAYS * groups)[:-1] + "]")


def deeply_nested(image: bytes, depth: int) -> Body:
    """A body whose unused member is an array nested ``depth`` deep."""
    return json_with_member(image, "[" * depth + "]" * depth)


def hostile_json(
    spec: PodSpec,
    images: Sequence[Path],
    *,
    body_bytes: int = 6 * MIB,
    depth: int = 1000,
    concurrency: int = 2,
    timeout: float = 120.0,
) -> AttackResult:
    """``concurrency`` copies of each hostile body at once, then one good request.

    Passes when every hostile body is answered 400, the pod has no OOM kill, no probe fails and
    the good request after them is served (200).
    """
    photo = images[0].read_bytes()
    bodies = {
        "nested-arrays": many_nested_arrays(photo, body_bytes),
        "deep": deeply_nested(photo, depth),
    }
    with running_pod(spec, "hostile-json") as pod:
        outcomes: dict[str, list[Outcome]] = {name: [] for name in bodies}
        with connection_sampler(pod), Prober(pod.port, spec.probes) as prober:
            for name, body in bodies.items():
                clients = [
                    threading.Thread(
                        target=lambda b=body, o=outcomes[name]: o.append(
                            exchange(pod.port, b, timeout)
                        )
                    )
                    for _ in range(concurrency)
                ]
                for client in clients:
                    client.start()
                for client in clients:
                    client.join()
            time.sleep(1.0)  # an OOM kill is counted once the kernel has acted
            after = exchange(pod.port, photo_body(images, 0), timeout)
        figures = {
            "body_bytes": {name: len(body.data) for name, body in bodies.items()},
            "statuses": {name: dict(statuses_of(got)) for name, got in outcomes.items()},
            "good_request_after": after.status or after.failure,
            **probe_figures(prober),
            **pod_figures(pod),
        }
    cell = (
        f"nested arrays {figures['statuses']['nested-arrays']}, {depth} deep "
        f"{figures['statuses']['deep']}; OOM kills {figures['oom_kills']}, peak "
        f"{figures['peak_memory_mib']} MiB; next request {figures['good_request_after']}"
    )
    checks = [
        Check(
            "every hostile JSON body answered 400",
            all(o.status == 400 for got in outcomes.values() for o in got),
        ),
        Check("0 OOM kills", figures["oom_kills"] == 0),
        Check("0 probe failures", figures["probe_failures"] == 0),
        Check("the next good request is served (200)", after.status == 200),
    ]
    return AttackResult("hostile-json", figures, checks, cell)
