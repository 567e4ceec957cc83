"""Sizing from the pod's limits, in real memory cgroups (skipped where none can be written)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import free_port

from iweblens.harness.cgroup import CgroupUnavailable, MemoryCgroup
from iweblens.inference.resources import cgroup_memory_limit, memory_allotment, resident_bytes
from iweblens.inference.sizing import MiB
from iweblens.models.store import ModelPaths


@pytest.fixture
def small_cgroup() -> Iterator[MemoryCgroup]:
    """A memory cgroup of 300 MiB: room for the process, not for one OpenCV network beside it."""
    try:
        cgroup = MemoryCgroup.create(f"iweblens-sizing-{os.getpid()}", 300 * MiB)
    except CgroupUnavailable as error:
        pytest.skip(f"no writable memory cgroup (v1 or v2): {error}")
    try:
        yield cgroup
    finally:
        cgroup.remove()


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
