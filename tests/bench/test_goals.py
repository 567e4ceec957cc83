"""The bench's goals and tables from figures of known shape: which run each ratio takes, which
goals INT8 is exempt from, what a missing CPU count gives (no model, no pod: the arithmetic)."""

from __future__ import annotations

from iweblens.bench.agreement import INT8_ENGINE, REFERENCE_ENGINE
from iweblens.bench.floor import STAGES, FloorSample
from iweblens.bench.goals import (
    SERVED_OVER_FLOOR,
    EngineFigures,
    engine_claims,
    int8_served_claim,
)
from iweblens.bench.served import ServedRun
from iweblens.bench.tables import floor_table, served_row, served_table
from iweblens.load.client import LoadResult

CLIENTS, REPLICAS = 4, 2


def load(mean_s: float, throughput: float) -> LoadResult:
    return LoadResult(
        images=8,
        wall_s=8 / throughput,
        mean_s=mean_s,
        p50_s=mean_s,
        p90_s=mean_s,
        p95_s=mean_s,
        p99_s=mean_s,
        throughput=throughput,
        errors=0,
        timeouts=0,
        per_replica={},
        latencies=[mean_s] * 8,
    )


def figures(engine: str, cpu_s: float | None, rounds: int = 2) -> EngineFigures:
    """Each round: a 0.1 s floor, and served runs @1x1, @Cx1 and @CxR costing ``cpu_s`` each."""
    fig = EngineFigures(engine)
    for index in range(rounds):
        fig.floors.append(FloorSample(0.1, 0.1, dict.fromkeys(STAGES, 0.025), "native"))
        fig.rounds.append(
            [
                ServedRun(1, 1, load(0.105, 9.0), cpu_s, 100 * 2**20),
                ServedRun(CLIENTS, 1, load(0.42 + index, 9.5), cpu_s, 110 * 2**20),
                ServedRun(CLIENTS, REPLICAS, load(0.21, 19.0), cpu_s, 220 * 2**20),
            ]
        )
    return fig


def naive() -> list[ServedRun]:
    return [
        ServedRun(1, 1, load(1.0, 1.0), 1.0, 300 * 2**20),
        ServedRun(CLIENTS, 1, load(4.0, 1.0), 1.0, 300 * 2**20),
    ]


def test_each_round_gives_the_run_of_its_clients_and_replicas() -> None:
    fig = figures(REFERENCE_ENGINE, 0.1)
    assert [run.load.mean_s for run in fig.served(CLIENTS, 1)] == [0.42, 1.42]
    assert [(run.clients, run.replicas) for run in fig.served(CLIENTS, REPLICAS)] == [(4, 2)] * 2


def test_served_over_floor_is_the_floors_cpu_over_the_served_cpu_per_round() -> None:
    claims = engine_claims(figures(REFERENCE_ENGINE, 0.1), CLIENTS, REPLICAS, naive(), True)
    served_floor = claims[0]
    assert served_floor.value is not None
    assert served_floor.value.values == (1.0, 1.0)
    assert served_floor.met is (SERVED_OVER_FLOOR <= 1.0)
    scaling = next(c for c in claims if c.name.startswith(f"{REPLICAS} / 1 replica"))
    assert scaling.value is not None and scaling.value.values == (2.0, 2.0)
    assert scaling.met is False  # the goal is 2.8x


def test_int8_is_shown_not_judged_against_the_floor() -> None:
    claims = engine_claims(figures(INT8_ENGINE, 0.1), CLIENTS, REPLICAS, naive(), False)
    against_floor = [c for c in claims if any(w in c.name for w in ("floor", "/ F", "ideal"))]
    assert len(against_floor) == 5
    assert against_floor and all(c.met is None and c.goal == "" for c in against_floor)
    assert all(c.met is not None for c in claims if c not in against_floor)


def test_without_a_cgroup_cpu_count_the_cpu_goals_are_not_measured() -> None:
    claims = engine_claims(figures(REFERENCE_ENGINE, None), CLIENTS, REPLICAS, naive(), True)
    assert (claims[0].value, claims[0].met) == (None, None)
    int8 = int8_served_claim(figures(INT8_ENGINE, None), figures(REFERENCE_ENGINE, None), CLIENTS)
    assert (int8.value, int8.met) == (None, None)


def test_int8_served_is_the_reference_cpu_over_its_own() -> None:
    claim = int8_served_claim(figures(INT8_ENGINE, 0.05), figures(REFERENCE_ENGINE, 0.1), CLIENTS)
    assert claim.value is not None and claim.value.values == (2.0, 2.0)
    assert claim.met is True


def test_the_tables_have_a_row_per_engine_and_run_and_say_na_without_cpu() -> None:
    engines = [figures(REFERENCE_ENGINE, 0.1), figures(INT8_ENGINE, None)]
    floor = floor_table(engines)
    assert len(floor) == 2 + len(engines)
    assert all(f"{stage} CPU ms" in floor[0] for stage in STAGES)
    served = served_table(engines, naive(), CLIENTS, REPLICAS)
    assert len(served) == 2 + 3 * len(engines) + len(naive())
    assert served_row("x", engines[1].served(1, 1)).split(" | ")[1] == "n/a"
