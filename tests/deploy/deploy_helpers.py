"""Reading the deployment files as data: YAML manifests, the Dockerfile, the Makefile."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_DIR = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_DIR / "deploy" / "k8s"
KIND_CONFIG = REPO_DIR / "deploy" / "kind" / "cluster.yaml"
DOCKERFILE = REPO_DIR / "Dockerfile"
DOCKERIGNORE = REPO_DIR / ".dockerignore"
PYPROJECT = REPO_DIR / "pyproject.toml"
RUNTIME_LOCK = REPO_DIR / "requirements.lock"
MAKEFILE = REPO_DIR / "Makefile"
DOCKER_ENGINE_SCRIPT = REPO_DIR / "scripts" / "docker-engine.sh"
KUBERNETES_VERSION = "1.33.0"

MEMORY_UNITS = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
}  # fmt: skip


def parse_memory_quantity(quantity: str | int) -> int:
    """A Kubernetes memory quantity in bytes: ``"512Mi"`` -> 536870912, ``"1G"`` -> 10**9."""
    text = str(quantity).strip()
    for suffix, factor in sorted(MEMORY_UNITS.items(), key=lambda item: -len(item[0])):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def load_documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document in ``path`` that is a mapping."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if isinstance(doc, dict)]


def load_one(path: Path) -> dict[str, Any]:
    documents = load_documents(path)
    assert len(documents) == 1, f"{path} should hold exactly one object"
    return documents[0]


def makefile_variable(name: str) -> str:
    """The default a Makefile ``NAME ?= value`` line gives."""
    match = re.search(rf"^{name}\s*\??=\s*(\S+)\s*$", MAKEFILE.read_text(), re.MULTILINE)
    assert match, f"Makefile defines no {name}"
    return match.group(1)


def venv_tool(name: str) -> str | None:
    """A console script installed next to this Python (the dev extra), else one on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name)


def dockerfile_stages(path: Path = DOCKERFILE) -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    logical = re.sub(r"\\\n", " ", path.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), " ".join(arguments.split())))
    return stages


def final_stage_arguments(instruction: str) -> list[str]:
    return [arguments for name, arguments in dockerfile_stages()[-1] if name == instruction]


def exposed_port() -> int:
    (port,) = final_stage_arguments("EXPOSE")
    return int(port.split("/")[0])


def dockerfile_user_id() -> int:
    (user,) = final_stage_arguments("USER")
    return int(user.split(":")[0])


def entrypoint() -> list[str]:
    (exec_form,) = final_stage_arguments("ENTRYPOINT")
    return json.loads(exec_form)


# Figures measured by the container test, printed in the terminal summary (no assertion on speed).
FIGURES: dict[str, str] = {}

DOCKER_SIZE_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 10**3, "MB": 10**6}


def parse_docker_size(text: str) -> int:
    """A size as ``docker stats`` prints it (``"381.3MiB"``) in bytes."""
    match = re.fullmatch(r"([\d.]+)\s*([A-Za-z]+)", text.strip())
    assert match and match.group(2) in DOCKER_SIZE_UNITS, f"unexpected size {text!r}"
    return int(float(match.group(1)) * DOCKER_SIZE_UNITS[match.group(2)])


@dataclass
class Docker:
    """The ``docker`` client, pointed at the private engine."""

    env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        done = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            output = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
            raise AssertionError(f"docker {' '.join(args)} failed:\n{output}")
        return done.stdout.strip()


def engine_script(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run ``scripts/docker-engine.sh COMMAND`` (start, stop, status, base-image)."""
    return subprocess.run(
        [str(DOCKER_ENGINE_SCRIPT), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
