"""Three 0.5-CPU replicas behind HAProxy (the ``local`` backend): losing one, and scaling down.

A replica killed mid-run may fail only the requests it was holding; the balancer must route every
later request to the survivors, and the study's CSV must count the failures. A replica removed by
a scale-down (SIGTERM, as a pod deletion sends) must not fail any request at all.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from iweblens.bench.soak import ClosedLoop, Outcome
from iweblens.study.experiment import Point, run_experiment
from iweblens.study.replicas.haproxy import BalancerError, find_haproxy
from iweblens.study.replicas.local import LocalBackend
from iweblens.study.results import read_results

REPLICAS = 3
CLIENTS = 12
VICTIM = "replica-2"


@pytest.fixture(scope="module")
def backend(model_paths: object) -> Iterator[LocalBackend]:
    try:
        find_haproxy()
    except BalancerError as error:
        pytest.skip(str(error))
    local = LocalBackend(cpu_limit=0.5)
    try:
        yield local
    finally:
        local.close()


def wait_for(load: ClosedLoop, answers: int) -> None:
    while load.completed() < answers:
        time.sleep(0.05)


def served_after(outcomes: list[Outcome], moment: float) -> Counter[str | None]:
    return Counter(o.served_by for o in outcomes if o.started > moment)


def test_a_killed_replica_fails_only_its_requests_in_flight(
    backend: LocalBackend, coco128: list[Path]
) -> None:
    backend.scale(REPLICAS)
    load = ClosedLoop(backend.endpoint, coco128, CLIENTS).start()
    wait_for(load, 40)
    killing = time.monotonic()
    backend.kill(VICTIM)  # SIGKILL, and returns once the process is gone
    killed_at = time.monotonic()
    wait_for(load, load.completed() + 80)
    outcomes = load.stop()
    failed = [o for o in outcomes if not o.ok]
    in_flight = [o for o in outcomes if o.started < killed_at and o.ended > killing]
    after = served_after(outcomes, killed_at)
    print(
        f"\nkilled {VICTIM} (SIGKILL, {killed_at - killing:.2f} s until reaped) under {CLIENTS} "
        f"clients: {len(outcomes)} requests, "
        f"{len(in_flight)} in flight on all replicas at the kill, {len(failed)} failed "
        f"({Counter(o.status or o.failure for o in failed)}); served after the kill: {dict(after)}"
    )
    assert all(o in in_flight for o in failed), "a request sent after the kill failed"
    assert len(failed) < len(in_flight)  # the survivors' in-flight requests all completed
    assert set(after) <= {"replica-1", "replica-3"}
    assert all(count > 0 for count in after.values()) and len(after) == REPLICAS - 1


def test_the_study_csv_counts_the_requests_a_lost_replica_failed(
    backend: LocalBackend, coco128: list[Path], tmp_path: Path
) -> None:
    backend.scale(REPLICAS)
    # Enough requests that the run outlasts the 5 s kill timer several times over, whether the
    # 128 shared photographs or only the six committed ones are there.
    images = coco128 * math.ceil(256 / len(coco128))
    csv = tmp_path / "results.csv"
    killer = threading.Timer(5.0, backend.kill, args=(VICTIM,))
    killer.start()
    try:
        run_experiment(
            backend, [Point(REPLICAS, CLIENTS, 1)], images, csv, engine="opencv", progress=False
        )
    finally:
        killer.cancel()
        killer.join()
    (row,) = read_results(csv)
    served = sum(row["per_replica"].values())
    print(
        f"\nstudy row after losing {VICTIM} 5 s into the run: images {row['images']}, "
        f"errors {row['errors']}, timeouts {row['timeouts']}, per replica {row['per_replica']}"
    )
    assert row["errors"] > 0, "the lost requests are missing from the CSV"
    assert row["errors"] + row["timeouts"] + served == row["images"] == len(images)
    assert row["per_replica"][VICTIM] > 0  # it died mid-run, not before


def test_scaling_down_under_load_fails_nothing(backend: LocalBackend, coco128: list[Path]) -> None:
    backend.scale(REPLICAS)
    load = ClosedLoop(backend.endpoint, coco128, CLIENTS).start()
    wait_for(load, 40)
    started_scaling = time.monotonic()
    backend.scale(REPLICAS - 1)  # SIGTERM to the newest replica, then the balancer drops it
    scaled = time.monotonic()
    wait_for(load, load.completed() + 40)
    outcomes = load.stop()
    during = [o for o in outcomes if o.ended > started_scaling and o.started < scaled]
    print(
        f"\nscale-down {REPLICAS} -> {REPLICAS - 1} under {CLIENTS} clients took "
        f"{scaled - started_scaling:.1f} s: {len(outcomes)} requests, {len(during)} overlapping "
        f"it, statuses {Counter(o.status or o.failure for o in outcomes)}; "
        f"served after: {dict(served_after(outcomes, scaled))}"
    )
    assert all(o.ok for o in outcomes)
    assert len(served_after(outcomes, scaled)) == REPLICAS - 1
