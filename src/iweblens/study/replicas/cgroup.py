"""A CPU-quota cgroup per replica: what a pod's ``resources.limits.cpu`` does, without a cluster.

cgroup v1 (``cpu.cfs_quota_us``) and v2 (``cpu.max``) are both handled, whichever this machine
lets us write. A replica is put into its cgroup before it executes, so every process and thread it
ever starts (gunicorn forks its worker) is held to the quota, and the kernel counts the CPU time
they all use (v2 ``cpu.stat``; v1 ``cpuacct.usage``, which lives in a hierarchy of its own when
``cpu`` and ``cpuacct`` are mounted apart, so a twin cgroup of the same name is made there).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
# Puts the shell into every cgroup listed in $0 (colon-separated), then becomes the command:
# nothing runs outside the quota or the accounting.
ENTER_CGROUP = 'IFS=:; for f in $0; do echo $$ > "$f" || exit 1; done; unset IFS; exec "$@"'


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

    def __init__(self, path: Path, version: int, accounting: Path | None = None) -> None:
        self.path = path
        self.version = version
        # v1 only: the twin cgroup holding cpuacct.usage when cpuacct is mounted apart from cpu.
        self.accounting = accounting

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
                return cls(path, 1, _v1_accounting(root, name, path))
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

    @property
    def procs_files(self) -> list[Path]:
        """Each ``cgroup.procs`` a process joins: the quota's, and the accounting's when apart."""
        twin = [self.accounting / "cgroup.procs"] if self.accounting is not None else []
        return [self.procs_file, *twin]

    def command(self, command: list[str]) -> list[str]:
        """``command`` wrapped so that it joins this cgroup before it executes anything."""
        return ["sh", "-c", ENTER_CGROUP, ":".join(map(str, self.procs_files)), *command]

    def cpu_seconds(self) -> float | None:
        """CPU time used by every process that was ever inside (None without accounting).

        Read it before and after a run: the difference is what the run cost, however the quota
        throttled it and whatever else ran on the machine meanwhile.
        """
        try:
            if self.version == 2:
                for line in (self.path / "cpu.stat").read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) / 1e6
                return None
            usage = (self.accounting or self.path) / "cpuacct.usage"
            return int(usage.read_text()) / 1e9
        except (OSError, ValueError):
            return None

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
        for path in (self.path, self.accounting):
            if path is not None:
                _rmdir_when_empty(path, deadline + 5)


def _rmdir_when_empty(path: Path, deadline: float) -> None:
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            # EBUSY until the killed processes are reaped
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _v1_accounting(root: Path, name: str, quota_path: Path) -> Path | None:
    """The cpuacct twin of a v1 quota cgroup, or None when cpuacct shares its directory."""
    if (quota_path / "cpuacct.usage").exists():
        return None
    base = root / "cpuacct"
    if not (base / "cpuacct.usage").exists():
        return None
    try:
        return _make_dir(base / name)
    except OSError:
        return None


def _make_dir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path
