"""The HTTP edge's attacks (``iweblens.bench.attacks.connections``) on one imitated pod each: the
outcomes are asserted, nothing about speed. Each test prints the attack's figures (``pytest -s``).
"""

from __future__ import annotations

from pathlib import Path

from iweblens.bench.attacks.connections import (
    declared_bodies,
    maximal_burst,
    one_byte_flood,
    sigterm_long_job,
)
from iweblens.bench.attacks.results import AttackResult
from iweblens.harness.manifest import PodSpec

FLOOD_S = 15.0


def passed(result: AttackResult) -> bool:
    print("\n" + "\n".join(result.lines()))
    return result.passed


def test_a_one_byte_flood_of_the_connection_cap_leaves_probes_and_requests_served(
    pod_spec: PodSpec, coco128: list[Path]
) -> None:
    """1,000 connections of one byte each: 0 failed probes, every ordinary request served."""
    result = one_byte_flood(pod_spec, coco128, duration_s=FLOOD_S)
    assert passed(result), result.figures


def test_bodies_declared_and_never_sent_leave_ordinary_requests_served(
    pod_spec: PodSpec, coco128: list[Path]
) -> None:
    """Three connections declaring a body at the limit, headers only: the rest is served."""
    result = declared_bodies(pod_spec, coco128, duration_s=FLOOD_S)
    assert passed(result), result.figures


def test_19_maximal_requests_at_once_all_read_an_answer(
    pod_spec: PodSpec, coco128: list[Path]
) -> None:
    """Each ``http.client`` reads 200, or 503 with Retry-After: no reset, no OOM kill."""
    result = maximal_burst(pod_spec, coco128, requests=19)
    assert passed(result), result.figures


def test_sigterm_during_the_longest_admitted_job_exits_0_within_the_grace(
    pod_spec: PodSpec, coco128: list[Path]
) -> None:
    """The job outlasts the grace: its client reads a 503, the process exits 0 before SIGKILL."""
    result = sigterm_long_job(pod_spec, coco128)
    assert passed(result), result.figures
