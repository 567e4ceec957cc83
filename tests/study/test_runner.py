"""The runner's checks around each run: replicas ready before it, every replica served after it.

A stand-in backend in front of one stand-in replica that signs every answer ``replica-1``, while
the backend claims two replicas: exactly the case the per-replica check exists for.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest
from fake_replica import FakeReplica
from support import API_KEYS

from iweblens.study.experiment import plan, run_experiment
from iweblens.study.replicas import BackendError
from iweblens.study.results import read_results


class StandInBackend:
    name = "stand-in"
    cpu_limit = 0.5

    def __init__(self, replica: FakeReplica, ready: dict[str, bool]) -> None:
        self.endpoint = f"http://127.0.0.1:{replica.port}/api/object_detection"
        self.ready = ready
        self.scaled: list[int] = []

    def scale(self, replicas: int) -> None:
        self.scaled.append(replicas)

    def replica_names(self) -> list[str]:
        return list(self.ready)

    def readiness(self) -> dict[str, bool]:
        return dict(self.ready)

    def kill(self, name: str) -> None:
        del self.ready[name]

    def close(self) -> None:
        pass


def test_a_replica_that_served_nothing_is_warned_about_and_recorded_as_zero(
    tmp_path: Path,
    photos: list[Path],
    fake_replica: Callable[[str], FakeReplica],
    capsys: pytest.CaptureFixture[str],
) -> None:
    backend = StandInBackend(fake_replica("replica-1"), {"replica-1": True, "replica-2": True})
    output = tmp_path / "results.csv"
    points = plan((2,), (1, 2), 1)
    run_experiment(backend, points, photos[:2], output, engine="opencv", progress=False)
    assert backend.scaled == [2]
    rows = read_results(output)
    assert [row["per_replica"] for row in rows] == [{"replica-1": 2, "replica-2": 0}] * 2
    warnings = [line for line in capsys.readouterr().err.splitlines() if "WARNING" in line]
    assert len(warnings) == 2
    assert all("replica-2 served no request" in line for line in warnings)


def test_no_run_starts_while_a_replica_is_not_ready(
    tmp_path: Path, photos: list[Path], fake_replica: Callable[[str], FakeReplica]
) -> None:
    backend = StandInBackend(fake_replica("replica-1"), {"replica-1": True, "replica-2": False})
    output = tmp_path / "results.csv"
    with pytest.raises(BackendError, match="2 ready replicas wanted"):
        run_experiment(
            backend, plan((2,), (1,), 1), photos[:2], output,
            engine="opencv", ready_timeout=1, progress=False,
        )  # fmt: skip
    assert not output.exists()


def test_the_study_sends_the_api_key(tmp_path: Path, photos: list[Path], keyed_server: str) -> None:
    replica = SimpleNamespace(port=urlparse(keyed_server).port)
    backend = StandInBackend(replica, {"test-server": True})  # type: ignore[arg-type]
    keyless, keyed = tmp_path / "keyless.csv", tmp_path / "keyed.csv"
    run_experiment(
        backend, plan((1,), (2,), 1), photos[:2], keyless, engine="opencv", progress=False
    )
    assert read_results(keyless)[0]["errors"] == 2
    run_experiment(
        backend, plan((1,), (2,), 1), photos[:2], keyed,
        engine="opencv", progress=False, api_key=API_KEYS[0],
    )  # fmt: skip
    assert read_results(keyed)[0]["errors"] == 0
