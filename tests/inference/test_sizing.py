"""Sizing from the pod's limits: the per-model estimate, and real servers in real memory cgroups
(skipped where none can be written)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from support import free_port

from iweblens.config import env_name
from iweblens.harness.cgroup import CgroupUnavailable, MemoryCgroup
from iweblens.harness.serving import LOOPBACK, replica_is_ready, serve_command
from iweblens.inference.resources import cgroup_memory_limit, memory_allotment, resident_bytes
from iweblens.inference.sizing import (
    BUNDLED_WEIGHTS_BYTES,
    NETWORK_MIB,
    MiB,
    NetworkLoad,
    largest_fitting,
    measured_bytes,
)
from iweblens.models.store import ModelPaths

BOTH = "yolov3-tiny,yolov4-tiny"
START_TIMEOUT_S = 180.0

MemoryCgroups = Callable[[int], MemoryCgroup]


@pytest.fixture
def memory_cgroups() -> Iterator[MemoryCgroups]:
    """Makes memory cgroups of a given limit (bytes), each removed after the test."""
    made: list[MemoryCgroup] = []

    def make(limit: int) -> MemoryCgroup:
        try:
            cgroup = MemoryCgroup.create(f"iweblens-sizing-{os.getpid()}-{len(made)}", limit)
        except CgroupUnavailable as error:
            pytest.skip(f"no writable memory cgroup (v1 or v2): {error}")
        made.append(cgroup)
        return cgroup

    try:
        yield make
    finally:
        for cgroup in made:
            cgroup.remove()


@pytest.fixture
def small_cgroup(memory_cgroups: MemoryCgroups) -> MemoryCgroup:
    """A memory cgroup of 300 MiB: room for the process, not for one OpenCV network beside it."""
    return memory_cgroups(300 * MiB)


def test_a_measured_size_gets_its_own_figure_or_a_smaller_size_s_if_larger() -> None:
    for (model, engine), figures in NETWORK_MIB.items():
        for size in figures:
            expected = max(mib for side, mib in figures.items() if side <= size)
            assert NetworkLoad(model, engine, size).bytes == expected * MiB
    assert measured_bytes({320: 101, 416: 99}, 416) == 101 * MiB


def test_a_size_between_two_measured_ones_gets_the_larger_figure() -> None:
    figures = {320: 100, 416: 300, 608: 330}
    # OpenCV's memory steps up between 352 and 384: interpolating would underestimate 384.
    assert measured_bytes(figures, 384) == 300 * MiB
    assert measured_bytes(figures, 352) == 300 * MiB
    assert measured_bytes(figures, 512) == 330 * MiB
    assert measured_bytes(figures, 256) == 100 * MiB


def test_above_the_largest_measured_size_the_figure_grows_with_the_area() -> None:
    assert measured_bytes({416: 100}, 832) == 400 * MiB
    opencv = NetworkLoad("yolov3-tiny", "opencv", 640).bytes
    assert opencv == int(NETWORK_MIB["yolov3-tiny", "opencv"][608] * MiB * (640 / 608) ** 2)


def test_every_bundled_figure_grows_with_the_input() -> None:
    for model, engine in NETWORK_MIB:
        estimates = [NetworkLoad(model, engine, size).bytes for size in range(224, 1024, 32)]
        assert estimates == sorted(estimates), (model, engine)


def test_a_user_model_is_never_below_the_largest_bundled_figure_of_its_engine() -> None:
    for engine in {engine for _, engine in NETWORK_MIB}:
        largest = max(NetworkLoad(m, e, 416).bytes for m, e in NETWORK_MIB if e == engine)
        assert NetworkLoad("mine", engine, 416).bytes == largest
        assert NetworkLoad("mine", engine, 416, weights_bytes=1).bytes == largest


def test_a_user_model_scales_with_its_weights_at_the_highest_measured_ratio() -> None:
    weights = 10 * BUNDLED_WEIGHTS_BYTES["yolov3-tiny"]
    expected = max(
        NetworkLoad(model, "opencv", 416).bytes * weights // BUNDLED_WEIGHTS_BYTES[model]
        for model, engine in NETWORK_MIB
        if engine == "opencv"
    )
    assert NetworkLoad("mine", "opencv", 416, weights_bytes=weights).bytes == expected
    assert expected > 10 * NetworkLoad("yolov3-tiny", "opencv", 416).bytes * 0.99


def test_an_unmeasured_engine_gets_the_largest_figure_of_any() -> None:
    largest = max(NetworkLoad(m, e, 416).bytes for m, e in NETWORK_MIB)
    assert NetworkLoad("yolov3-tiny", "some-engine", 416).bytes == largest


def test_the_largest_sets_that_fit_are_named() -> None:
    loads = [NetworkLoad(model, "opencv", 416) for model in ("yolov3-tiny", "yolov4-tiny")]
    both = sum(load.bytes for load in loads)
    assert largest_fitting(loads, both) == [("yolov3-tiny", "yolov4-tiny")]
    assert largest_fitting(loads, both - 1) == [("yolov3-tiny",), ("yolov4-tiny",)]
    assert largest_fitting(loads, loads[1].bytes) == [("yolov4-tiny",)]
    assert largest_fitting(loads, loads[1].bytes - 1) == []


def test_the_limit_is_read_from_inside_the_cgroup(small_cgroup: MemoryCgroup) -> None:
    code = (
        "from iweblens.inference.resources import cgroup_memory_limit, memory_allotment;"
        "print(cgroup_memory_limit(), memory_allotment())"
    )
    result = subprocess.run(
        small_cgroup.command([sys.executable, "-c", code]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.split() == [str(300 * MiB)] * 2


def test_outside_a_limit_the_allotment_is_physical_memory() -> None:
    # This test process runs in no memory cgroup of ours; the machine's memory bounds it.
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = cgroup_memory_limit()
    assert memory_allotment() == (physical if limit is None else min(limit, physical))
    assert 0 < resident_bytes() < memory_allotment()


def test_a_pod_too_small_for_one_network_exits_with_the_reason(
    model_paths: ModelPaths, small_cgroup: MemoryCgroup
) -> None:
    command = [sys.executable, "-m", "iweblens.cli", "serve", "--host", "127.0.0.1"]
    result = subprocess.run(
        small_cgroup.command([*command, "--port", str(free_port())]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "cannot hold one opencv network" in result.stderr
    assert "give the pod more memory" in result.stderr
    assert small_cgroup.oom_kills() == 0


def _serve_in(
    cgroup: MemoryCgroup, env: dict[str, str], port: int, log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen(
            cgroup.command(serve_command(port)),
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_two_models_too_large_for_the_pod_exit_naming_what_would_fit(
    model_paths: ModelPaths, yolov4_tiny_paths: ModelPaths, memory_cgroups: MemoryCgroups
) -> None:
    cgroup = memory_cgroups(512 * MiB)
    result = subprocess.run(
        cgroup.command(serve_command(free_port())),
        env={**os.environ, env_name("models"): BOTH},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "cannot hold one network of each model (yolov3-tiny on opencv" in result.stderr
    models = env_name("models")
    assert f"{models}=yolov3-tiny or {models}=yolov4-tiny would fit" in result.stderr
    assert "give the pod more memory (at least " in result.stderr
    assert cgroup.oom_kills() == 0


def test_two_models_in_a_larger_pod_start_and_serve_each(
    model_paths: ModelPaths,
    yolov4_tiny_paths: ModelPaths,
    memory_cgroups: MemoryCgroups,
    photos: list[Path],
    tmp_path: Path,
) -> None:
    cgroup = memory_cgroups(1024 * MiB)
    port = free_port()
    server = _serve_in(cgroup, {env_name("models"): BOTH}, port, tmp_path / "serve.log")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not replica_is_ready(LOOPBACK, port):
            log = (tmp_path / "serve.log").read_text(errors="replace")
            assert server.poll() is None, f"the server exited:\n{log}"
            assert time.monotonic() < deadline, f"not ready in {START_TIMEOUT_S} s:\n{log}"
            time.sleep(0.25)
        for model in ("yolov3-tiny", "yolov4-tiny"):
            with photos[0].open("rb") as image:
                response = requests.post(
                    f"http://{LOOPBACK}:{port}/api/object_detection",
                    files={"image": image},
                    data={"model": model, "details": "true"},
                    timeout=60,
                )
            assert response.status_code == 200, response.text
            assert response.json()["model"]["name"] == model
    finally:
        server.terminate()
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
    assert cgroup.oom_kills() == 0
