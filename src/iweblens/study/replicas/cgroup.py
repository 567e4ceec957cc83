"""A CPU-quota cgroup per replica: what a pod's ``resources.limits.cpu`` does, without a cluster.

cgroup v1 (``cpu.cfs_quota_us``) and v2 (``cpu.max``) are both handled, whichever this machine
lets us write. A replica is put into its cgroup before it executes, so every process and thread it
ever starts (the server, and any child it might start) is held to the quota.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


class CgroupUnavailable(OSError):
    """No writable cgroup hierarchy with a CPU controller."""


def _v1_hierarchies(root: Path) -> list[Path]:
    return [
        base
        for base in (root / "cpu", root / "cpu,cpuacct")
        if (base / "cpu.cfs_quota_us").exists()
    ]


def _v2_hierarchies(root: Path) -> list[Path]:
    found = []
    for base in (root, root / "unified"):
        try:
            controllers = (base / "cgroup.controllers").read_text().split()
        except OSError:
            continue
        if "cpu" in controllers:
            found.append(base)
    return found


class CpuCgroup:
    """One cgroup of ours holding a CPU quota in cores; :meth:`remove` takes it away again."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def create(cls, name: str, cores: float, root: Path = CGROUP_ROOT) -> CpuCgroup:
        """Create ``name`` with a quota of ``cores`` in the first hierarchy that accepts it."""
        quota_us = round(cores * PERIOD_US)
        failures = []
        for base in _v1_hierarchies(root):
            try:
                path = _make_dir(base / name)
                (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (path / "cpu.cfs_quota_us").write_text(str(quota_us))
                return cls(path, 1)
            except OSError as error:
                failures.append(f"{base}: {error}")
        for base in _v2_hierarchies(root):
            try:
                subtree = base / "cgroup.subtree_control"
                if "cpu" not in subtree.read_text().split():
                    subtree.write_text("+cpu")
                path = _make_dir(base / name)
                (path / "cpu.max").write_text(f"{quota_us} {PERIOD_US}")
                return cls(path, 2)
            except OSError as error:
                failures.append(f"{base}: {error}")
        reason = "; ".join(failures) or f"no cgroup hierarchy with a cpu controller under {root}"
        raise CgroupUnavailable(reason)

    @property
    def procs_file(self) -> Path:
        """Writing a pid here moves that process (all its threads) into the cgroup."""
        return self.path / "cgroup.procs"

    def quota_cores(self) -> float | None:
        """The quota as the kernel holds it, read back from the cgroup's files."""
        if self.version == 1:
            quota = int((self.path / "cpu.cfs_quota_us").read_text())
            period = int((self.path / "cpu.cfs_period_us").read_text())
        else:
            text = (self.path / "cpu.max").read_text().split()
            if text[0] == "max":
                return None
            quota, period = int(text[0]), int(text[1])
        return quota / period if quota > 0 else None

    def pids(self) -> list[int]:
        """Processes still inside; all of them descend from the replica we started here."""
        try:
            return [int(line) for line in self.procs_file.read_text().split()]
        except FileNotFoundError:
            return []

    def remove(self, timeout: float = 10.0) -> None:
        """Remove the cgroup, killing any process of ours still in it after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                # EBUSY until the killed processes are reaped
                if time.monotonic() > deadline + 5:
                    raise
                time.sleep(0.1)


def _make_dir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path
