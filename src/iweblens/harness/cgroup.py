"""Cgroups per replica: what a pod's ``resources.limits`` do, without a cluster.

A CPU quota (v1 ``cpu.cfs_quota_us``, v2 ``cpu.max``) and a memory limit (v1
``memory.limit_in_bytes``, v2 ``memory.max``), in whichever hierarchy this machine lets us write. A
replica is put into its cgroups before it executes (:func:`enter_command`), so every process and
thread it ever starts (the server, and any child it might start) is held to the limits, and the
kernel counts the CPU time they all use (v2 ``cpu.stat``; v1 ``cpuacct.usage``, which lives in a
hierarchy of its own when ``cpu`` and ``cpuacct`` are mounted apart, so a twin cgroup of the same
name is made there and joined too).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
# Moves the shell into every cgroup whose ``cgroup.procs`` is listed before ``--``, then becomes the
# command: nothing the command starts ever runs outside the limits.
ENTER_CGROUPS = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'


class CgroupUnavailable(OSError):
    """No writable cgroup hierarchy with the controller we need."""


def enter_command(procs_files: Sequence[Path], command: Sequence[str]) -> list[str]:
    """``command``, run so that it enters the cgroups of ``procs_files`` before it executes."""
    return ["sh", "-c", ENTER_CGROUPS, "sh", *map(str, procs_files), "--", *command]


def _v1_hierarchies(root: Path, folders: Sequence[str], probe: str) -> list[Path]:
    return [root / folder for folder in folders if (root / folder / probe).exists()]


def _v2_hierarchies(root: Path, controller: str) -> list[Path]:
    found = []
    for base in (root, root / "unified"):
        try:
            controllers = (base / "cgroup.controllers").read_text().split()
        except OSError:
            continue
        if controller in controllers:
            found.append(base)
    return found


def _create_in_first_writable(
    name: str,
    controller: str,
    root: Path,
    v1_folders: Sequence[str],
    v1_probe: str,
    setup_v1: Callable[[Path], None],
    setup_v2: Callable[[Path], None],
) -> tuple[Path, int]:
    """Make ``name`` in the first hierarchy of ``controller`` that takes it: (path, version)."""
    failures = []
    for base in _v1_hierarchies(root, v1_folders, v1_probe):
        try:
            path = _make_dir(base / name)
            setup_v1(path)
            return path, 1
        except OSError as error:
            failures.append(f"{base}: {error}")
    for base in _v2_hierarchies(root, controller):
        try:
            subtree = base / "cgroup.subtree_control"
            if controller not in subtree.read_text().split():
                subtree.write_text(f"+{controller}")
            path = _make_dir(base / name)
            setup_v2(path)
            return path, 2
        except OSError as error:
            failures.append(f"{base}: {error}")
    none = f"no cgroup hierarchy with a {controller} controller under {root}"
    raise CgroupUnavailable("; ".join(failures) or none)


class Cgroup:
    """One cgroup directory of ours; :meth:`remove` takes it away again."""

    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @property
    def procs_file(self) -> Path:
        """Writing a pid here moves that process (all its threads) into the cgroup."""
        return self.path / "cgroup.procs"

    @property
    def directories(self) -> list[Path]:
        """Every directory that makes up this cgroup (a process joins them all)."""
        return [self.path]

    @property
    def procs_files(self) -> list[Path]:
        """Each ``cgroup.procs`` a process joins to be inside this cgroup."""
        return [directory / "cgroup.procs" for directory in self.directories]

    def command(self, command: Sequence[str]) -> list[str]:
        """``command`` run inside this cgroup from its first instruction."""
        return enter_command(self.procs_files, command)

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
        for directory in self.directories:
            _rmdir_when_empty(directory, deadline + 5)


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


class CpuCgroup(Cgroup):
    """One cgroup of ours holding a CPU quota in cores, and counting the CPU time used inside."""

    def __init__(self, path: Path, version: int, accounting: Path | None = None) -> None:
        super().__init__(path, version)
        # v1 only: the twin cgroup holding cpuacct.usage when cpuacct is mounted apart from cpu.
        self.accounting = accounting

    @classmethod
    def create(cls, name: str, cores: float, root: Path = CGROUP_ROOT) -> CpuCgroup:
        """Create ``name`` with a quota of ``cores`` in the first hierarchy that accepts it."""

        def setup_v1(path: Path) -> None:
            _write_quota(path, 1, cores)

        def setup_v2(path: Path) -> None:
            _write_quota(path, 2, cores)

        folders = ("cpu", "cpu,cpuacct")
        path, version = _create_in_first_writable(
            name, "cpu", root, folders, "cpu.cfs_quota_us", setup_v1, setup_v2
        )
        return cls(path, version, _v1_accounting(root, name, path) if version == 1 else None)

    def set_cores(self, cores: float) -> None:
        """Change the quota while processes run inside (the kernel applies it at once)."""
        _write_quota(self.path, self.version, cores)

    @property
    def directories(self) -> list[Path]:
        """The quota's cgroup, and its cpuacct twin when cpuacct is mounted apart."""
        twin = [self.accounting] if self.accounting is not None else []
        return [self.path, *twin]

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


def _write_quota(path: Path, version: int, cores: float) -> None:
    quota_us = round(cores * PERIOD_US)
    if version == 1:
        (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (path / "cpu.cfs_quota_us").write_text(str(quota_us))
    else:
        (path / "cpu.max").write_text(f"{quota_us} {PERIOD_US}")


def _make_dir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


class MemoryCgroup(Cgroup):
    """One cgroup of ours holding a memory limit: its peak usage and OOM kills are the kernel's."""

    @classmethod
    def create(cls, name: str, limit_bytes: int, root: Path = CGROUP_ROOT) -> MemoryCgroup:
        """Create ``name`` limited to ``limit_bytes`` in the first hierarchy that accepts it.

        Swap is limited too where the kernel offers it: a Kubernetes node runs without swap by
        default, so a pod over its limit is OOM-killed rather than swapped out.
        """

        def setup_v1(path: Path) -> None:
            (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):  # absent when the kernel accounts no swap
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))

        def setup_v2(path: Path) -> None:
            (path / "memory.max").write_text(str(limit_bytes))
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")

        return cls(
            *_create_in_first_writable(
                name, "memory", root, ("memory",), "memory.limit_in_bytes", setup_v1, setup_v2
            )
        )

    def limit_bytes(self) -> int | None:
        """The limit as the kernel holds it (None when unlimited)."""
        name = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
        text = (self.path / name).read_text().strip()
        return None if text == "max" else int(text)

    def peak_bytes(self) -> int | None:
        """The most ever charged to the cgroup (None on a v2 kernel older than 5.19)."""
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int((self.path / name).read_text())
        except FileNotFoundError:
            return None

    def oom_kills(self) -> int:
        """Processes the kernel killed because the cgroup reached its limit."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0


class PodCgroup:
    """A CPU quota and a memory limit around one process tree, as a pod's ``limits`` give.

    cgroup v1 keeps the two in separate hierarchies (``cpu/NAME`` and ``memory/NAME``); v2 in one
    folder. A process joins both through :meth:`command`.
    """

    def __init__(self, cpu: CpuCgroup, memory: MemoryCgroup) -> None:
        self.cpu = cpu
        self.memory = memory

    @classmethod
    def create(
        cls, name: str, cores: float, memory_bytes: int, root: Path = CGROUP_ROOT
    ) -> PodCgroup:
        """Both cgroups, or ``CgroupUnavailable`` (and nothing left behind) if either fails."""
        cpu = CpuCgroup.create(name, cores, root)
        try:
            return cls(cpu, MemoryCgroup.create(name, memory_bytes, root))
        except CgroupUnavailable:
            cpu.remove()
            raise

    @property
    def procs_files(self) -> list[Path]:
        return list(dict.fromkeys([*self.cpu.procs_files, *self.memory.procs_files]))

    def command(self, command: Sequence[str]) -> list[str]:
        """``command`` run inside both cgroups from its first instruction."""
        return enter_command(self.procs_files, command)

    def pids(self) -> list[int]:
        return sorted(set(self.cpu.pids()) | set(self.memory.pids()))

    def remove(self) -> None:
        self.memory.remove()
        if self.cpu.path != self.memory.path:
            self.cpu.remove()
