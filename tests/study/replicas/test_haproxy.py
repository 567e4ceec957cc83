"""HAProxy as the Service stand-in: config, round robin, readiness and the retry rule, for real."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from fake_replica import FakeReplica

from iweblens.harness.serving import free_port
from iweblens.study.replicas.haproxy import Balancer, Server, haproxy_config


@pytest.fixture
def replicas(fake_replica: Callable[[str], FakeReplica]) -> list[FakeReplica]:
    return [fake_replica("replica-1"), fake_replica("replica-2")]


@pytest.fixture
def balancer(tmp_path: Path, haproxy: str) -> Iterator[Balancer]:
    running = Balancer("127.0.0.1", free_port(), tmp_path)
    yield running
    running.close()


def post(balancer: Balancer) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{balancer.port}/api/object_detection", data=b"x")


def test_config_round_robins_over_ready_replicas_and_retries_only_unserved_requests(
    tmp_path: Path, haproxy: str
) -> None:
    servers = [Server("replica-1", "127.0.0.1", 5001), Server("replica-2", "127.0.0.1", 5002)]
    config = haproxy_config("127.0.0.1", 8080, servers, "iweblens-test-stats")
    assert "bind 127.0.0.1:8080" in config
    assert "balance roundrobin" in config
    assert "option httpchk GET /readyz" in config
    assert "retry-on conn-failure 503" in config
    assert "option http-buffer-request" in config
    assert "server replica-1 127.0.0.1:5001" in config
    assert "server replica-2 127.0.0.1:5002" in config
    # 32 concurrent requests of several seconds each must not hit a limit or a timeout.
    assert "timeout server 10m" in config
    assert "maxconn 4096" in config
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    check = subprocess.run([haproxy, "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_round_robin_then_reload_to_a_new_replica_set(
    balancer: Balancer, replicas: list[FakeReplica]
) -> None:
    first, second = replicas
    balancer.configure([first.as_server()])
    assert {post(balancer).headers["X-Served-By"] for _ in range(4)} == {"replica-1"}
    balancer.configure([first.as_server(), second.as_server()])
    served = [post(balancer).headers["X-Served-By"] for _ in range(6)]
    assert served.count("replica-1") == served.count("replica-2") == 3
    assert balancer.server_states() == {
        "replica-1": (f"127.0.0.1:{first.port}", "UP"),
        "replica-2": (f"127.0.0.1:{second.port}", "UP"),
    }


def wait_for_state(balancer: Balancer, name: str, state: str) -> None:
    deadline = time.monotonic() + 30
    while balancer.server_states()[name][1] != state:
        assert time.monotonic() < deadline, balancer.server_states()
        time.sleep(0.1)


def test_routes_only_to_ready_replicas(balancer: Balancer, replicas: list[FakeReplica]) -> None:
    first, second = replicas
    balancer.configure([first.as_server(), second.as_server()])
    second.ready = False
    wait_for_state(balancer, "replica-2", "DOWN")
    assert {post(balancer).headers["X-Served-By"] for _ in range(6)} == {"replica-1"}
    second.ready = True
    wait_for_state(balancer, "replica-2", "UP")
    assert {post(balancer).headers["X-Served-By"] for _ in range(6)} == {"replica-1", "replica-2"}


def test_refused_connection_is_retried_on_another_replica(
    balancer: Balancer, replicas: list[FakeReplica]
) -> None:
    first, second = replicas
    balancer.configure([first.as_server(), second.as_server()])
    second.close()  # its port now refuses connections; the health checks have not noticed yet
    responses = [post(balancer) for _ in range(6)]
    assert [r.status_code for r in responses] == [200] * 6
    assert {r.headers["X-Served-By"] for r in responses} == {"replica-1"}
    backend = next(row for row in balancer.stats() if row["svname"] == "BACKEND")
    assert int(backend["wretr"]) + int(backend["wredis"]) >= 1


def test_request_that_reached_a_replica_is_never_sent_again(
    balancer: Balancer, replicas: list[FakeReplica]
) -> None:
    first, second = replicas
    balancer.configure([first.as_server(), second.as_server()])
    first.mode = second.mode = "hang-up"
    response = post(balancer)
    assert response.status_code == 502
    assert first.posts + second.posts == 1


def test_a_503_is_retried_on_another_replica(
    balancer: Balancer, replicas: list[FakeReplica]
) -> None:
    # A replica answers 503 only for work it did not run (shed, or queued when it was stopped).
    first, second = replicas
    balancer.configure([first.as_server(), second.as_server()])
    first.mode = "shed"
    photo_sized = b"x" * 420_000  # the largest reference photograph, as a multipart upload
    url = f"http://127.0.0.1:{balancer.port}/api/object_detection"
    responses = [requests.post(url, data=photo_sized, timeout=30) for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert {r.headers["X-Served-By"] for r in responses} == {"replica-2"}
    assert first.posts >= 1
