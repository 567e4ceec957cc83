"""What this process may really use: its CPU and memory allotment (cgroups), and the CPU's ISA.

A pod limited to 0.5 CPU still sees every core of the node in ``os.cpu_count()``; sizing thread
pools from that number makes OpenCV spawn threads that only fight over the quota. The cgroup CPU
quota (v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``) is the real allotment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

CGROUP_ROOT = Path("/sys/fs/cgroup")
Limit = TypeVar("Limit", int, float)  # a CPU quota in cores, a memory limit in bytes


def _own_cgroup_paths(proc_cgroup: str) -> dict[str, str]:
    """Map each controller (``""`` for cgroup v2) to this process's cgroup path."""
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _quota_v2(directory: Path) -> float | None:
    text = _read(directory / "cpu.max")
    if not text:
        return None
    quota, _, period = text.partition(" ")
    if quota == "max" or not period:
        return None
    return int(quota) / int(period)


def _quota_v1(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    if not quota or not period or int(quota) <= 0:
        return None
    return int(quota) / int(period)


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """CPU quota of this process's cgroup in cores, or None when it has no limit.

    Inside a container the cgroup namespace usually makes our cgroup the mount's root, so the
    mount root is tried as well as the path from ``/proc/self/cgroup``. The tightest quota wins.
    """
    return _tightest(root, proc_cgroup, _quota_v2, "cpu", ("cpu", "cpu,cpuacct"), _quota_v1)


def cpu_allotment() -> float:
    """Cores this process may use: the cgroup quota, capped by the CPUs it may be scheduled on."""
    visible = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota()
    return min(quota, visible) if quota is not None else float(visible)


def threads_for(allotment: float) -> int:
    """Compute threads worth running for an allotment: 0.5 CPU gets 1, 1.5 gets 2."""
    return max(1, math.ceil(allotment - 1e-9))


def _memory_v2(directory: Path) -> int | None:
    text = _read(directory / "memory.max")
    return int(text) if text and text != "max" else None


def _memory_v1(directory: Path) -> int | None:
    text = _read(directory / "memory.limit_in_bytes")
    # cgroup v1 reports "no limit" as a huge number near 2**63 rounded down to a page.
    return int(text) if text and int(text) < 2**62 else None


def cgroup_memory_limit(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> int | None:
    """Memory limit of this process's cgroup in bytes (v2 ``memory.max``, v1
    ``memory.limit_in_bytes``), or None when it has none. Found as ``cgroup_cpu_quota`` finds the
    quota (own path and mount root); the tightest limit wins."""
    return _tightest(root, proc_cgroup, _memory_v2, "memory", ("memory",), _memory_v1)


def _tightest(
    root: Path,
    proc_cgroup: str | None,
    read_v2: Callable[[Path], Limit | None],
    v1_controller: str,
    v1_mounts: tuple[str, ...],
    read_v1: Callable[[Path], Limit | None],
) -> Limit | None:
    """The smallest value the readers find for this process: in the v2 hierarchy (mounted at
    ``root`` or ``root/unified``) and in the v1 controller's mounts, each at the process's own
    cgroup path and at the mount's root."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    paths = _own_cgroup_paths(proc_cgroup)
    values: list[Limit | None] = []
    v2_path = paths.get("", "/").lstrip("/")
    for base in (root, root / "unified"):
        values += [read_v2(base / v2_path), read_v2(base)]
    v1_path = paths.get(v1_controller, "/").lstrip("/")
    for mount in v1_mounts:
        values += [read_v1(root / mount / v1_path), read_v1(root / mount)]
    found = [value for value in values if value is not None]
    return min(found) if found else None


def memory_allotment() -> int:
    """Bytes this process may use: the cgroup memory limit, else the machine's physical memory."""
    limit = cgroup_memory_limit()
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return min(limit, physical) if limit is not None else physical


def resident_bytes() -> int:
    """This process's resident set size now, in bytes (``/proc/self/statm``)."""
    pages = int((_read(Path("/proc/self/statm")) or "0 0").split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE")


# The instruction sets that change which engine or kernel is fastest here (and by how much).
ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
)


def isa_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """Which of ``ISA_FLAGS`` the CPU exposes to this machine, in that order (Linux only;
    an empty list where /proc/cpuinfo is missing or lists no flags)."""
    flags: set[str] = set()
    for line in (_read(cpuinfo) or "").splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return [flag for flag in ISA_FLAGS if flag in flags]
