"""The docker backend's ``docker run``: host network, loopback port, the pod's CPU limit."""

from __future__ import annotations

import itertools

from iweblens.study.replicas.docker import docker_run_command


def test_each_container_gets_the_pod_limit_a_loopback_port_and_its_name() -> None:
    command = docker_run_command(
        "docker", "iweblens:latest", "iweblens-42-replica-2", "replica-2", 41002, 0.5, "onnxruntime"
    )
    assert command[:2] == ["docker", "run"]
    assert command[-1] == "iweblens:latest"
    options = command[2:-1]
    assert "--detach" in options
    pairs = dict(itertools.pairwise(options))
    assert pairs["--name"] == "iweblens-42-replica-2"
    assert pairs["--network"] == "host"  # never a bridge: no traffic off loopback
    assert pairs["--cpus"] == "0.5"
    environment = {options[i + 1] for i, option in enumerate(options) if option == "--env"}
    assert environment == {
        "IWEBLENS_HOST=127.0.0.1",
        "IWEBLENS_PORT=41002",
        "IWEBLENS_SERVED_BY=replica-2",
        "IWEBLENS_ENGINE=onnxruntime",
    }


def test_without_an_engine_the_image_default_is_kept() -> None:
    command = docker_run_command("docker", "img", "c", "replica-1", 5000, 1.0, None)
    assert not any(part.startswith("IWEBLENS_ENGINE") for part in command)
    assert command[command.index("--cpus") + 1] == "1"
