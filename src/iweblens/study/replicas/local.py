"""``local``: each replica an ``iweblens serve`` process in its own CPU-quota cgroup.

This is the study's default: no cluster and no Docker, yet every replica is held to the pod's CPU
limit by the same kernel mechanism a container runtime uses, so adding replicas adds CPU the way
adding pods does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from iweblens.config import POD_CPUS, Settings
from iweblens.harness.cgroup import CGROUP_ROOT, CgroupUnavailable, CpuCgroup
from iweblens.harness.serving import LOOPBACK, serve_command
from iweblens.study.replicas.behind_haproxy import BalancedBackend, Replica

STOP_TIMEOUT_S = 30.0


@dataclass
class LocalReplica(Replica):
    process: subprocess.Popen[bytes]
    log: Path
    cgroup: CpuCgroup | None


class LocalBackend(BalancedBackend[LocalReplica]):
    """``iweblens serve`` processes on loopback ports, each limited to ``cpu_limit`` cores."""

    name = "local"

    def __init__(
        self,
        *,
        cpu_limit: float = POD_CPUS,
        engine: str | None = None,
        balancer_port: int = 0,
        ready_timeout: float = 180.0,
        cgroup_root: Path = CGROUP_ROOT,
    ) -> None:
        super().__init__(
            cpu_limit=cpu_limit, balancer_port=balancer_port, ready_timeout=ready_timeout
        )
        self._requested_cpu = cpu_limit
        self._engine = engine
        self._cgroup_root = cgroup_root

    def cgroup_of(self, name: str) -> CpuCgroup | None:
        """The cgroup holding replica ``name`` (None when it runs unlimited)."""
        return self._replicas[name].cgroup

    def pid_of(self, name: str) -> int:
        """The pid of the replica's server process."""
        return self._replicas[name].process.pid

    def _start(self, name: str, port: int) -> LocalReplica:
        cgroup = self._limit(name)
        command = serve_command(port)
        if cgroup is not None:
            command = cgroup.command(command)
        env = {
            **os.environ,
            **Settings.to_env(
                served_by=name, host=LOOPBACK, port=port, engine=self._engine or None
            ),
        }
        log = self.workdir / f"{name}.log"
        with log.open("ab") as output:
            process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return LocalReplica(name, port, process, log, cgroup)

    def _limit(self, name: str) -> CpuCgroup | None:
        # The workdir's random suffix keeps two backends of one process (the bench runs one per
        # engine) out of each other's cgroups.
        backend = self.workdir.name.rsplit("-", 1)[-1]
        cgroup_name = f"iweblens-{os.getpid()}-{backend}-{name}"
        try:
            return CpuCgroup.create(cgroup_name, self._requested_cpu, self._cgroup_root)
        except CgroupUnavailable as error:
            self.cpu_limit = None
            print(
                f"WARNING: NO CPU LIMIT for {name}: no writable cgroup ({error}). It may use "
                "every core, so these figures do not measure 0.5-CPU pods; cpu_limit is "
                "recorded as unknown.",
                file=sys.stderr,
            )
            return None

    def _stop(self, replica: LocalReplica) -> None:
        # On SIGTERM the server answers what it accepted (served, or 503 past the grace), exits.
        replica.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            replica.process.wait(timeout=STOP_TIMEOUT_S)
        self._kill(replica)

    def _kill(self, replica: LocalReplica) -> None:
        """SIGKILL to the replica's whole process group, then its cgroup goes."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(replica.process.pid, signal.SIGKILL)
        replica.process.wait()
        if replica.cgroup is not None:
            replica.cgroup.remove()

    def _alive(self, replica: LocalReplica) -> bool:
        return replica.process.poll() is None

    def _logs(self, replica: LocalReplica) -> str:
        lines = replica.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-30:])
