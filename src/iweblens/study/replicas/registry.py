"""The replica backends by name: the one list ``iweblens experiment --backend`` chooses from.

A new backend is one factory in ``BACKENDS``; a name that is not there is an error, never a
silent fall-through to another backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iweblens.config import POD_CPUS
from iweblens.harness.manifest import DEFAULT_MANIFEST, manifest_cpu_limit
from iweblens.study.replicas import Backend, BackendError
from iweblens.study.replicas.docker import DEFAULT_IMAGE, DockerBackend
from iweblens.study.replicas.kubernetes import DEFAULT_ENDPOINT, KubernetesBackend
from iweblens.study.replicas.local import LocalBackend


@dataclass(frozen=True)
class ReplicaOptions:
    """Everything the command line can say about the replicas; each backend reads its own."""

    cpu_limit: float | None = None  # local and docker: cores per replica (None: their default)
    engine: str | None = None  # local and docker: the replicas' engine (None: the image's)
    balancer_port: int = 0  # local and docker: HAProxy's loopback port (0: a free one)
    image: str = DEFAULT_IMAGE  # docker
    manifest: Path = DEFAULT_MANIFEST  # docker: the Deployment whose CPU limit applies
    endpoint: str = DEFAULT_ENDPOINT  # kubernetes: the Service's URL
    deployment: str = "iweblens"  # kubernetes
    namespace: str | None = None  # kubernetes (None: kubectl's)
    context: str | None = None  # kubernetes (None: the current one)


def _local(options: ReplicaOptions) -> Backend:
    return LocalBackend(
        cpu_limit=options.cpu_limit or POD_CPUS,
        engine=options.engine,
        balancer_port=options.balancer_port,
    )


def _docker(options: ReplicaOptions) -> Backend:
    return DockerBackend(
        cpu_limit=options.cpu_limit or manifest_cpu_limit(options.manifest),
        image=options.image,
        engine=options.engine,
        balancer_port=options.balancer_port,
    )


def _kubernetes(options: ReplicaOptions) -> Backend:
    return KubernetesBackend(
        endpoint=options.endpoint,
        deployment=options.deployment,
        namespace=options.namespace,
        context=options.context,
    )


BackendFactory = Callable[[ReplicaOptions], Backend]

BACKENDS: dict[str, BackendFactory] = {
    "local": _local,
    "docker": _docker,
    "kubernetes": _kubernetes,
}


def create_backend(name: str, options: ReplicaOptions) -> Backend:
    """Start the backend registered as ``name``; ``BackendError`` lists the known names."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        known = ", ".join(BACKENDS)
        raise BackendError(f"unknown backend {name!r}; choose one of {known}") from None
    return factory(options)
