"""Fixtures for the experiment runner and its backends."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fake_replica import FakeReplica

from iweblens.backends.balancer import BalancerError, find_haproxy


@pytest.fixture(scope="session")
def haproxy() -> str:
    """HAProxy's path; tests that need the real balancer skip, saying why, where it is missing."""
    try:
        return find_haproxy()
    except BalancerError as error:
        pytest.skip(str(error))


@pytest.fixture
def fake_replica() -> Iterator[Callable[[str], FakeReplica]]:
    """Start stand-in replicas by name; all are stopped after the test."""
    started: list[FakeReplica] = []

    def start(name: str) -> FakeReplica:
        started.append(FakeReplica(name))
        return started[-1]

    yield start
    for replica in started:
        replica.close()
