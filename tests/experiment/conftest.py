"""Fixtures for the experiment runner and its backends."""

from __future__ import annotations

import pytest

from iweblens.backends.balancer import BalancerError, find_haproxy


@pytest.fixture(scope="session")
def haproxy() -> str:
    """HAProxy's path; tests that need the real balancer skip, saying why, where it is missing."""
    try:
        return find_haproxy()
    except BalancerError as error:
        pytest.skip(str(error))
