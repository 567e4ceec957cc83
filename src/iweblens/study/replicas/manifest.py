"""The per-pod CPU limit, read from the Kubernetes Deployment manifest.

The ``docker`` backend gives each container the limit the cluster would give each pod, so a
single-machine study measures the same thing as the cluster one; reading it from the manifest keeps
the two from drifting apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEFAULT_MANIFEST = Path("deploy/k8s/deployment.yaml")


class ManifestError(ValueError):
    """The manifest holds no usable CPU limit."""


def parse_cpu_quantity(quantity: str | float) -> float:
    """A Kubernetes CPU quantity in cores: ``"500m"`` -> 0.5, ``"0.5"`` -> 0.5, ``1`` -> 1.0."""
    text = str(quantity).strip()
    try:
        cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
    except ValueError:
        raise ManifestError(f"{quantity!r} is not a CPU quantity (e.g. 0.5 or 500m)") from None
    if not cores > 0:
        raise ManifestError(f"CPU quantity {quantity!r} is not positive")
    return cores


def deployment_cpu_limit(deployment: dict[str, Any]) -> float:
    """``resources.limits.cpu`` of the Deployment's first container, in cores."""
    try:
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        quantity = container["resources"]["limits"]["cpu"]
    except (KeyError, IndexError, TypeError):
        name = deployment.get("metadata", {}).get("name", "?")
        raise ManifestError(f"Deployment {name!r} sets no resources.limits.cpu") from None
    return parse_cpu_quantity(quantity)


def manifest_cpu_limit(path: Path = DEFAULT_MANIFEST) -> float:
    """The CPU limit of the (first) Deployment in a possibly multi-document YAML file."""
    try:
        with Path(path).open(encoding="utf-8") as handle:
            documents = [doc for doc in yaml.safe_load_all(handle) if isinstance(doc, dict)]
    except (OSError, yaml.YAMLError) as error:
        raise ManifestError(f"cannot read the CPU limit from {path}: {error}") from error
    for document in documents:
        if document.get("kind") == "Deployment":
            return deployment_cpu_limit(document)
    raise ManifestError(f"{path} holds no Deployment")
