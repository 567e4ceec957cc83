"""``docker``: each replica a container of the service image, limited as the pod would be.

Containers use ``--network host`` on distinct loopback ports (no bridge network, no NAT), so the
only difference from ``local`` is the container runtime itself; the CPU limit comes from the
Deployment manifest, so a container gets exactly what a pod gets.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from iweblens.config import Settings
from iweblens.harness.serving import LOOPBACK
from iweblens.study.replicas import BackendError
from iweblens.study.replicas.behind_haproxy import BalancedBackend, Replica

DEFAULT_IMAGE = "iweblens:latest"
STOP_TIMEOUT_S = 30


@dataclass
class Container(Replica):
    container: str


def docker_run_command(
    docker: str, image: str, container: str, name: str, port: int, cpus: float, engine: str | None
) -> list[str]:
    """``docker run`` for one replica on ``LOOPBACK:port`` signing its responses ``name``."""
    command = [
        docker, "run", "--detach",
        "--name", container,
        "--network", "host",
        "--cpus", f"{cpus:g}",
    ]  # fmt: skip
    environment = Settings.to_env(host=LOOPBACK, port=port, served_by=name, engine=engine or None)
    for variable, value in environment.items():
        command += ["--env", f"{variable}={value}"]
    return [*command, image]


class DockerBackend(BalancedBackend[Container]):
    """Containers of ``image`` on loopback ports, each with ``--cpus cpu_limit``."""

    name = "docker"
    cpu_limit: float  # always the requested --cpus: Docker enforces it or refuses to run

    def __init__(
        self,
        *,
        cpu_limit: float,
        image: str = DEFAULT_IMAGE,
        engine: str | None = None,
        docker: str = "docker",
        balancer_port: int = 0,
        ready_timeout: float = 180.0,
    ) -> None:
        super().__init__(
            cpu_limit=cpu_limit, balancer_port=balancer_port, ready_timeout=ready_timeout
        )
        self._image = image
        self._engine = engine
        self._docker = docker
        # Unique per run, so two studies (or a leftover container) never collide on a name.
        self._prefix = f"iweblens-{os.getpid()}"

    def _run(self, *args: str, timeout: float = 120) -> str:
        try:
            done = subprocess.run(
                [self._docker, *args], capture_output=True, text=True, timeout=timeout
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise BackendError(f"docker {args[0]}: {error}") from error
        if done.returncode != 0:
            raise BackendError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def _start(self, name: str, port: int) -> Container:
        container = f"{self._prefix}-{name}"
        command = docker_run_command(
            self._docker, self._image, container, name, port, self.cpu_limit, self._engine
        )
        self._run(*command[1:])
        return Container(name, port, container)

    def _stop(self, replica: Container) -> None:
        # Removed here rather than by --rm, which removes asynchronously: once this returns the
        # container is gone, and its logs were there to read until then.
        self._run("stop", "--time", str(STOP_TIMEOUT_S), replica.container, timeout=60)
        self._run("rm", replica.container)

    def _kill(self, replica: Container) -> None:
        self._run("rm", "--force", replica.container)

    def _alive(self, replica: Container) -> bool:
        try:
            state = self._run("inspect", "--format", "{{.State.Running}}", replica.container)
        except BackendError:
            return False
        return state == "true"

    def _logs(self, replica: Container) -> str:
        # The service logs to stderr.
        done = subprocess.run(
            [self._docker, "logs", "--tail", "30", replica.container],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=60,
        )
        return done.stdout.strip()
