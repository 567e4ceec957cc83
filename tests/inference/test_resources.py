from pathlib import Path

from iweblens.inference.resources import (
    ISA_FLAGS,
    cgroup_cpu_quota,
    cpu_allotment,
    isa_flags,
    threads_for,
)


def test_cgroup_v2_quota_of_own_cgroup(tmp_path: Path) -> None:
    own = tmp_path / "kubepods" / "pod1"
    own.mkdir(parents=True)
    (own / "cpu.max").write_text("50000 100000\n")
    assert cgroup_cpu_quota(tmp_path, "0::/kubepods/pod1\n") == 0.5


def test_cgroup_v2_unlimited(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path, "0::/\n") is None


def test_cgroup_v1_quota_with_namespaced_root(tmp_path: Path) -> None:
    # Inside a container the cgroup path from /proc names the host's hierarchy, but the
    # container's own cgroup is mounted at the root.
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("150000\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path, "4:cpu,cpuacct:/docker/abc\n0::/\n") == 1.5


def test_cgroup_v1_unlimited_is_none(tmp_path: Path) -> None:
    cpu = tmp_path / "cpu"
    cpu.mkdir()
    (cpu / "cpu.cfs_quota_us").write_text("-1\n")
    (cpu / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path, "1:cpu:/\n") is None


def test_tightest_quota_wins(tmp_path: Path) -> None:
    own = tmp_path / "cpu" / "replica"
    own.mkdir(parents=True)
    (own / "cpu.cfs_quota_us").write_text("50000\n")
    (own / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert cgroup_cpu_quota(tmp_path, "1:cpu:/replica\n0::/\n") == 0.5


def test_threads_for_allotment() -> None:
    assert [threads_for(x) for x in (0.25, 0.5, 1.0, 1.5, 2.0)] == [1, 1, 1, 2, 2]


def test_allotment_is_positive_and_within_visible_cpus() -> None:
    import os

    assert 0 < cpu_allotment() <= len(os.sched_getaffinity(0))


def test_isa_flags_lists_the_known_flags_of_the_cpu_in_order(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC\n"
        "flags\t\t: fpu sse2 fma avx512_vnni avx2 avx512f\n\n"
        "processor\t: 1\nflags\t\t: fpu sse2 fma avx512_vnni avx2 avx512f\n"
    )
    assert isa_flags(cpuinfo) == ["avx2", "fma", "avx512f", "avx512_vnni"]
    assert isa_flags(tmp_path / "missing") == []


def test_isa_flags_of_this_machine_are_known_names() -> None:
    assert set(isa_flags()) <= set(ISA_FLAGS)
