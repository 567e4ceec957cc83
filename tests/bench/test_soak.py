"""Soak: the 60-second version of ``make soak``, and the verdict on made-up readings."""

from __future__ import annotations

from pathlib import Path

import pytest

from iweblens.bench.soak import Outcome, Vitals, judge, rss_slope, soak
from iweblens.config import Settings
from iweblens.harness.manifest import PodSpec

CI_SOAK_S = 60


def test_one_minute_soak_of_32_clients_on_one_pod(pod_spec: PodSpec, coco128: list[Path]) -> None:
    report = soak(coco128, pod_spec, Settings.from_env(), duration_s=CI_SOAK_S, clients=32)
    print("\n" + "\n".join(report.lines()))
    assert report.requests > 32
    assert report.failures == []


def readings(rss_kb: list[int], fds: int = 12, threads: int = 40) -> list[Vitals]:
    return [Vitals(float(second), kb, fds, threads) for second, kb in enumerate(rss_kb)]


def verdict(samples: list[Vitals], after: Vitals, statuses: list[int | None]) -> list[str]:
    outcomes = [Outcome(0.0, 1.0, status, "r", None if status else "lost") for status in statuses]
    before = Vitals(0.0, 100_000, 10, 3)
    return judge(
        outcomes,
        samples,
        before,
        after,
        started=0.0,
        duration_s=len(samples) - 1,
        clients=32,
        cpu_limit=0.5,
        thread_cap=64,
    ).failures


def verdict_of_a_long_run(rss_kb_per_minute: float, oom_kills: int = 0) -> list[str]:
    """A 30-minute run read every 10 s, its RSS rising steadily."""
    samples = [
        Vitals(float(t), 400_000 + round(rss_kb_per_minute * t / 60), 12, 40)
        for t in range(0, 1801, 10)
    ]
    return judge(
        [Outcome(0.0, 1.0, 200, "r", None)],
        samples,
        Vitals(0.0, 100_000, 10, 3),
        Vitals(0.0, 1, 10, 40),
        started=0.0,
        duration_s=1800,
        clients=16,
        cpu_limit=0.5,
        thread_cap=64,
        oom_kills=oom_kills,
    ).failures


def test_a_long_run_judges_the_slope_after_warm_up() -> None:
    assert verdict_of_a_long_run(0.4 * 1024) == []
    assert verdict_of_a_long_run(0.6 * 1024) == [
        "RSS rising 0.60 MiB/min after warm-up (limit 0.5 MiB/min)"
    ]
    assert verdict_of_a_long_run(0, oom_kills=1) == ["1 OOM kills"]


def test_rss_slope_in_mib_per_minute() -> None:
    assert rss_slope(readings([1024 * minute for minute in range(5)])) == 60.0
    assert rss_slope(readings([1])) == 0.0


# 200 one-second readings: warm-up is the first 50 s, the windows are 20 s long.
FLAT = [400_000] * 201
LEAKING = [400_000 + 400 * second for second in range(201)]


@pytest.mark.parametrize(
    ("samples", "after", "statuses", "expected"),
    [
        (FLAT, Vitals(0.0, 1, 10, 40), [200] * 5, []),
        (LEAKING, Vitals(0.0, 1, 10, 40), [200] * 5, ["RSS drift +12.3% (limit 10%)"]),
        (FLAT, Vitals(0.0, 1, 13, 40), [200] * 5, ["3 file descriptors leaked"]),
        (FLAT, Vitals(0.0, 1, 10, 68), [200] * 5, ["more threads than the 64 pooled"]),
        (FLAT, Vitals(0.0, 1, 10, 40), [200, 502, None], ["2 requests did not get a 200"]),
    ],
    ids=["healthy", "memory-leak", "fd-leak", "thread-leak", "errors"],
)
def test_the_verdict_names_each_kind_of_failure(
    samples: list[int], after: Vitals, statuses: list[int | None], expected: list[str]
) -> None:
    failures = verdict(readings(samples), after, statuses)
    assert len(failures) == len(expected)
    for failure, start in zip(failures, expected, strict=True):
        assert failure.startswith(start)
