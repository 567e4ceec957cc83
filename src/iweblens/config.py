"""Service settings, read once from ``IWEBLENS_*`` environment variables."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path


def default_model_dir() -> Path:
    """Per-user cache folder for the model files (``$XDG_CACHE_HOME/iweblens/models``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "iweblens" / "models"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"IWEBLENS_{name}", default)


@dataclass(frozen=True)
class Settings:
    """Everything the service can be tuned with; see the README's configuration table."""

    model_dir: Path = field(default_factory=default_model_dir)
    engine: str = "opencv"
    confidence: float = 0.5
    nms: float = 0.45
    input_size: int = 416
    max_body_bytes: int = 16 * 1024 * 1024
    # 4000 x 3000 (a 12 MP phone photograph): decoding costs ~6 bytes a pixel (OpenCV's JPEG
    # decoder holds two copies at its peak) and a 512 MiB pod has ~96 MiB for requests, so one
    # maximal request fits with room to spare (docs/reliability.md).
    max_pixels: int = 12_000_000
    inference_workers: int = 0  # 0 = one per core of the CPU allotment
    served_by: str = field(default_factory=socket.gethostname)
    host: str = "0.0.0.0"
    port: int = 5000
    threads: int = 64
    keepalive: int = 5
    read_timeout: int = 30  # seconds a request may take to arrive in full (headers and body)
    timeout: int = 120
    graceful_timeout: int = 30
    # Longest expected wait in the inference queue before a request is refused (503). 1 pod x 32
    # reference-client threads waits ~4.6 s (p99 ~5.6 s) on the study's machine, and 2-3x that on
    # a busy shared one (16 s seen): 30 s leaves the study error-free with margin.
    max_wait: float = 30.0
    # Bytes of requests in flight (bodies, decoding); 0 = the memory limit less what the loaded
    # networks and the process take, less a margin (see service/admission.py and sizing).
    memory_budget: int = 0
    # Open connections; past it the oldest idle one is closed to make room.
    max_connections: int = 1000

    @classmethod
    def from_env(cls) -> Settings:
        """Build settings from the environment, falling back to the defaults above."""
        base = cls()
        return cls(
            model_dir=Path(_env("MODEL_DIR", str(base.model_dir))),
            engine=_env("ENGINE", base.engine),
            confidence=float(_env("CONFIDENCE", str(base.confidence))),
            nms=float(_env("NMS", str(base.nms))),
            input_size=int(_env("INPUT_SIZE", str(base.input_size))),
            max_body_bytes=int(_env("MAX_BODY_BYTES", str(base.max_body_bytes))),
            max_pixels=int(_env("MAX_PIXELS", str(base.max_pixels))),
            inference_workers=int(_env("INFERENCE_WORKERS", str(base.inference_workers))),
            served_by=_env("SERVED_BY", base.served_by),
            host=_env("HOST", base.host),
            port=int(_env("PORT", str(base.port))),
            threads=int(_env("THREADS", str(base.threads))),
            keepalive=int(_env("KEEPALIVE", str(base.keepalive))),
            read_timeout=int(_env("READ_TIMEOUT", str(base.read_timeout))),
            timeout=int(_env("TIMEOUT", str(base.timeout))),
            graceful_timeout=int(_env("GRACEFUL_TIMEOUT", str(base.graceful_timeout))),
            max_wait=float(_env("MAX_WAIT", str(base.max_wait))),
            memory_budget=int(_env("MEMORY_BUDGET", str(base.memory_budget))),
            max_connections=int(_env("MAX_CONNECTIONS", str(base.max_connections))),
        )
