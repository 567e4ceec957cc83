"""The replica backends by name: each one registered, and no fall-through for an unknown name."""

from __future__ import annotations

import pytest

from iweblens.study.replicas import BackendError
from iweblens.study.replicas.registry import BACKENDS, ReplicaOptions, create_backend


def test_the_three_backends_are_registered() -> None:
    assert list(BACKENDS) == ["local", "docker", "kubernetes"]


def test_an_unknown_backend_is_an_error_naming_the_known_ones() -> None:
    with pytest.raises(BackendError) as raised:
        create_backend("nomad", ReplicaOptions())
    assert str(raised.value) == "unknown backend 'nomad'; choose one of local, docker, kubernetes"
