"""Where the study's replicas run: local processes, Docker containers or a Kubernetes Deployment.

Every backend answers the same few questions for ``iweblens experiment``: scale to N ready
replicas, which URL to load, which replicas exist and whether each is ready, the CPU limit each
one has, and how to make one disappear (for replica-loss tests). ``registry`` names them.
"""

from __future__ import annotations

from typing import Protocol


class BackendError(RuntimeError):
    """Replicas could not be started, scaled, checked or stopped."""


class Backend(Protocol):
    """What the experiment runner needs from wherever the replicas run."""

    name: str

    @property
    def cpu_limit(self) -> float | None:
        """Cores each replica may use; None when no limit could be applied (recorded unknown)."""
        ...

    @property
    def endpoint(self) -> str:
        """The object-detection URL the load client targets (the balancer or the Service)."""
        ...

    def scale(self, replicas: int) -> None:
        """Start or stop replicas until exactly ``replicas`` are ready behind the endpoint."""
        ...

    def replica_names(self) -> list[str]:
        """The replicas' names, as they sign their responses in ``X-Served-By``."""
        ...

    def readiness(self) -> dict[str, bool]:
        """Each replica's own readiness, asked of the replica itself rather than the balancer."""
        ...

    def kill(self, name: str) -> None:
        """Make one replica vanish abruptly, as a crashed pod or a lost node would."""
        ...

    def close(self) -> None:
        """Stop everything this backend started and remove what it created."""
        ...


__all__ = ["Backend", "BackendError"]
