"""Per-replica cgroups: CPU quota and memory limit, v1 and v2 layouts, and this machine's own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iweblens.harness.cgroup import (
    CGROUP_ROOT,
    CgroupUnavailable,
    CpuCgroup,
    MemoryCgroup,
    PodCgroup,
)
from iweblens.study.replicas.local import LocalBackend


def test_v1_quota_files(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    cgroup = CpuCgroup.create("replica-1", 0.5, root=tmp_path)
    assert cgroup.version == 1
    assert (cgroup.path / "cpu.cfs_period_us").read_text() == "100000"
    assert (cgroup.path / "cpu.cfs_quota_us").read_text() == "50000"
    assert cgroup.quota_cores() == 0.5


def test_v1_cpuacct_mounted_apart_gets_a_twin_that_is_entered_and_removed(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    (tmp_path / "cpuacct").mkdir()
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text("0")
    cgroup = CpuCgroup.create("replica-1", 0.5, root=tmp_path)
    assert cgroup.accounting == tmp_path / "cpuacct" / "replica-1"
    assert cgroup.procs_files == [cgroup.procs_file, cgroup.accounting / "cgroup.procs"]
    (cgroup.accounting / "cpuacct.usage").write_text("2500000000\n")
    assert cgroup.cpu_seconds() == 2.5
    entered = cgroup.command(["true"])[4:]
    assert entered == [*map(str, cgroup.procs_files), "--", "true"]
    for path in (cgroup.path, cgroup.accounting):
        for child in path.iterdir():
            child.unlink()
    cgroup.remove()
    assert not cgroup.path.exists() and not cgroup.accounting.exists()


def test_v1_cpu_and_cpuacct_together_need_no_twin(tmp_path: Path) -> None:
    base = tmp_path / "cpu,cpuacct"
    base.mkdir()
    (base / "cpu.cfs_quota_us").write_text("-1")
    (base / "replica-1").mkdir()
    (base / "replica-1" / "cpuacct.usage").write_text("1000000000")
    cgroup = CpuCgroup.create("replica-1", 0.5, root=tmp_path)
    assert cgroup.accounting is None
    assert cgroup.procs_files == [cgroup.procs_file]
    assert cgroup.cpu_seconds() == 1.0


def test_two_local_backends_of_one_process_never_share_a_replica_cgroup(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    first, second = (LocalBackend(cgroup_root=tmp_path) for _ in range(2))
    try:
        a, b = first._limit("replica-1"), second._limit("replica-1")
        assert a is not None and b is not None
        assert a.path != b.path
        assert a.path.name.startswith(f"iweblens-{os.getpid()}-")
    finally:
        first.close()
        second.close()


def test_v2_cpu_max_and_controller_enabled(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("memory\n")
    cgroup = CpuCgroup.create("replica-1", 1.5, root=tmp_path)
    assert cgroup.version == 2
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+cpu"
    assert (cgroup.path / "cpu.max").read_text() == "150000 100000"
    assert cgroup.quota_cores() == 1.5
    (cgroup.path / "cpu.stat").write_text("usage_usec 750000\nuser_usec 500000\n")
    assert cgroup.cpu_seconds() == 0.75


def test_no_cpu_controller_anywhere_says_so(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("memory pids\n")
    with pytest.raises(CgroupUnavailable, match="no cgroup hierarchy with a cpu controller"):
        CpuCgroup.create("replica-1", 0.5, root=tmp_path)


def test_real_cgroup_holds_a_process_and_its_children_to_the_quota() -> None:
    """A process put in by the replicas' entry wrapper, and a child it forks, are inside."""
    try:
        cgroup = CpuCgroup.create(f"iweblens-test-{os.getpid()}", 0.5, CGROUP_ROOT)
    except CgroupUnavailable as error:
        pytest.skip(f"no writable cgroup on this machine: {error}")
    try:
        forks_a_child = ["sh", "-c", "sleep 30 & exec sleep 30"]
        shell = subprocess.Popen(
            cgroup.command(forks_a_child),
            start_new_session=True,
        )
        try:
            assert cgroup.quota_cores() == 0.5
            assert shell.pid in _wait_for_pids(cgroup, 2)
            own = Path(f"/proc/{shell.pid}/cgroup").read_text()
            assert f"/{cgroup.path.name}\n" in own
        finally:
            os.killpg(shell.pid, 9)
            shell.wait()
    finally:
        cgroup.remove()
    assert not cgroup.path.exists()


def test_real_cgroup_counts_the_cpu_time_of_what_runs_inside() -> None:
    """A busy child's CPU time shows in the cgroup's count; nothing from outside does."""
    try:
        cgroup = CpuCgroup.create(f"iweblens-test-acct-{os.getpid()}", 0.5, CGROUP_ROOT)
    except CgroupUnavailable as error:
        pytest.skip(f"no writable cgroup on this machine: {error}")
    try:
        before = cgroup.cpu_seconds()
        if before is None:
            pytest.skip("this machine's cgroups count no CPU time")
        busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
        subprocess.run(cgroup.command([sys.executable, "-c", busy]), check=True)
        used = cgroup.cpu_seconds()
        assert used is not None
        assert used - before >= 0.3
    finally:
        cgroup.remove()
    assert not cgroup.path.exists()
    assert cgroup.accounting is None or not cgroup.accounting.exists()


def _wait_for_pids(cgroup: CpuCgroup, count: int) -> list[int]:
    for _ in range(100):
        pids = cgroup.pids()
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    return cgroup.pids()


def test_v1_memory_limit_peak_and_oom_kills(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712")
    cgroup = MemoryCgroup.create("pod", 512 * 2**20, root=tmp_path)
    assert cgroup.version == 1
    assert cgroup.limit_bytes() == 536870912
    assert (cgroup.path / "memory.memsw.limit_in_bytes").read_text() == "536870912"
    (cgroup.path / "memory.max_usage_in_bytes").write_text("523763712\n")
    (cgroup.path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert cgroup.peak_bytes() == 523763712
    assert cgroup.oom_kills() == 2


def test_v2_pod_cgroup_is_one_folder_with_both_limits(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    pod = PodCgroup.create("pod", 0.5, 512 * 2**20, root=tmp_path)
    assert pod.cpu.path == pod.memory.path == tmp_path / "pod"
    assert (pod.memory.path / "memory.max").read_text() == "536870912"
    assert (pod.memory.path / "memory.swap.max").read_text() == "0"
    assert pod.procs_files == [tmp_path / "pod" / "cgroup.procs"]
    (pod.memory.path / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
    assert pod.memory.oom_kills() == 1
    assert pod.memory.peak_bytes() is None  # memory.peak is absent before Linux 5.19


def test_real_pod_cgroup_holds_a_process_to_both_limits() -> None:
    """On this machine's hierarchy: the process is in the CPU and the memory cgroup."""
    try:
        pod = PodCgroup.create(f"iweblens-test-pod-{os.getpid()}", 0.5, 256 * 2**20, CGROUP_ROOT)
    except CgroupUnavailable as error:
        pytest.skip(f"no writable CPU and memory cgroup on this machine: {error}")
    try:
        shell = subprocess.Popen(pod.command(["sleep", "30"]), start_new_session=True)
        try:
            own = ""
            for _ in range(100):
                own = Path(f"/proc/{shell.pid}/cgroup").read_text()
                if own.count(f"/{pod.memory.path.name}\n") == len(pod.procs_files):
                    break
                time.sleep(0.05)
            assert shell.pid in pod.pids()
            assert all(f"/{path.parent.name}\n" in own for path in pod.procs_files)
            assert pod.memory.limit_bytes() == 256 * 2**20
            assert pod.cpu.quota_cores() == 0.5
        finally:
            os.killpg(shell.pid, 9)
            shell.wait()
    finally:
        pod.remove()
    assert not pod.memory.path.exists()
    assert not pod.cpu.path.exists()
