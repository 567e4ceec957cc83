"""The ``local`` backend and ``iweblens experiment`` for real: replicas, cgroups, HAProxy, CSV.

Real ``iweblens serve`` replicas with the real model, each in its own 0.5-CPU cgroup, behind a
real HAProxy on loopback; then the plot and the report made from what was measured.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pypdf import PdfReader

from iweblens.cli import main
from iweblens.harness.cgroup import CGROUP_ROOT
from iweblens.models.store import ModelPaths
from iweblens.study.replicas.local import LocalBackend
from iweblens.study.results import read_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IDENTITY = {
    "--name": "Ada Lovelace",
    "--tutor": "Charles Babbage",
    "--login": "alov0001",
    "--student-id": "31415926",
}


@pytest.fixture
def images(tmp_path: Path, photos: list[Path]) -> Path:
    """Four of the committed photographs, the study's input folder."""
    folder = tmp_path / "images"
    folder.mkdir()
    for photo in photos[:4]:
        (folder / photo.name).symlink_to(photo)
    return folder


def leftover_cgroups(owner_pid: int) -> list[Path]:
    return sorted((CGROUP_ROOT / "cpu").glob(f"iweblens-{owner_pid}-*"))


@pytest.fixture
def two_replicas(model_paths: ModelPaths, haproxy: str) -> Iterator[LocalBackend]:
    backend = LocalBackend(cpu_limit=0.5)
    try:
        backend.scale(2)
        yield backend
    finally:
        backend.close()
    assert leftover_cgroups(os.getpid()) == []


def test_each_replica_is_held_to_half_a_core_by_its_own_cgroup(two_replicas: LocalBackend) -> None:
    assert two_replicas.cpu_limit == 0.5
    paths = set()
    for name in ("replica-1", "replica-2"):
        cgroup = two_replicas.cgroup_of(name)
        assert cgroup is not None, f"{name} runs without a CPU limit"
        paths.add(cgroup.path)
        assert (cgroup.path / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cgroup.path / "cpu.cfs_period_us").read_text().strip() == "100000"
        pids = cgroup.pids()
        # The server is one process (its threads go with it): nothing of the replica escapes
        assert two_replicas.pid_of(name) in pids
        for pid in pids:
            assert f":cpu:/{cgroup.path.name}\n" in Path(f"/proc/{pid}/cgroup").read_text()
    assert len(paths) == 2


def test_a_lost_replica_costs_no_request_and_is_replaced(
    two_replicas: LocalBackend, photos: list[Path]
) -> None:
    two_replicas.kill("replica-1")
    served = []
    for photo in photos[:4]:
        with photo.open("rb") as image:
            response = requests.post(two_replicas.endpoint, files={"image": image}, timeout=60)
        assert response.status_code == 200, response.text
        served.append(response.headers["X-Served-By"])
    assert set(served) == {"replica-2"}
    two_replicas.scale(2)
    assert two_replicas.readiness() == {"replica-2": True, "replica-1": True}


def test_small_study_then_plot_and_report(
    tmp_path: Path, images: Path, model_paths: ModelPaths, haproxy: str
) -> None:
    results = tmp_path / "results.csv"
    study = ["experiment", "--backend", "local", "--pods", "1,2", "--threads", "1,4"]
    study += ["--repeats", "1", "--images", str(images), "--output", str(results)]
    assert main(study) == 0
    rows = read_results(results)
    assert [(row["pods"], row["threads"], row["repeat"]) for row in rows] == [
        (1, 1, 1), (1, 4, 1), (2, 1, 1), (2, 4, 1),
    ]  # fmt: skip
    for row in rows:
        assert (row["backend"], row["images"], row["errors"], row["timeouts"]) == ("local", 4, 0, 0)
        assert row["cpu_limit"] == 0.5
        assert row["load1"] is not None and row["mean_s"] > 0 and row["throughput"] > 0
        assert sum(row["per_replica"].values()) == 4
        expected = {f"replica-{i}" for i in range(1, row["pods"] + 1)}
        assert set(row["per_replica"]) == expected
        assert all(count > 0 for count in row["per_replica"].values()), row["per_replica"]
    assert leftover_cgroups(os.getpid()) == []

    assert main(study) == 0  # everything is measured: the rerun adds nothing
    assert read_results(results) == rows

    plot = tmp_path / "plot.png"
    assert main(["plot", str(results), "-o", str(plot)]) == 0
    assert plot.read_bytes().startswith(PNG_SIGNATURE)
    report = tmp_path / "report.pdf"
    identity = [part for pair in IDENTITY.items() for part in pair]
    assert main(["report", str(results), "-o", str(report), *identity]) == 0
    pdf = PdfReader(io.BytesIO(report.read_bytes()))
    assert len(pdf.pages) <= 2
    text = " ".join(page.extract_text() for page in pdf.pages)
    for value in IDENTITY.values():
        assert value in text


def test_interrupted_study_keeps_its_runs_cleans_up_and_resumes(
    tmp_path: Path, images: Path, model_paths: ModelPaths, haproxy: str
) -> None:
    results = tmp_path / "results.csv"
    study = [sys.executable, "-m", "iweblens.cli", "experiment", "--pods", "1"]
    study += ["--threads", "1,2,4,8", "--repeats", "2", "--images", str(images)]
    study += ["--output", str(results)]
    scratch = tmp_path / "scratch"  # the runner's temporary files: HAProxy config, replica logs
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    # Started as a background job is (SIGINT ignored), so the test does not depend on how pytest
    # itself was started: the study must still stop on SIGINT.
    run = subprocess.Popen(
        study,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.monotonic() + 300
        while not (results.exists() and read_results(results)):
            assert run.poll() is None, run.stderr.read() if run.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)  # Ctrl-C, or `kill -INT` of a background job
        _, errors = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 130, errors
    assert "interrupted: the finished runs are in" in errors
    kept = read_results(results)
    assert 1 <= len(kept) < 8
    assert leftover_cgroups(run.pid) == []
    assert subprocess.run(["pgrep", "-af", str(scratch)], capture_output=True).stdout == b""
    assert list(scratch.iterdir()) == []

    resumed = subprocess.run(study, capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr
    rows = read_results(results)
    assert rows[: len(kept)] == kept
    points = [(row["threads"], row["repeat"]) for row in rows]
    assert sorted(points) == sorted((t, r) for t in (1, 2, 4, 8) for r in (1, 2))
