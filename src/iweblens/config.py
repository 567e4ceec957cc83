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


def _words(text: str) -> tuple[str, ...]:
    """Comma- or newline-separated words, stripped, empty ones dropped."""
    return tuple(word.strip() for word in text.replace("\n", ",").split(",") if word.strip())


def _yes(name: str, default: bool) -> bool:
    return _env(name, "1" if default else "0").strip().lower() in {"1", "true", "yes", "on"}


def read_api_keys(path: Path) -> tuple[str, ...]:
    """The keys in a key file (a mounted Secret): one per line or comma-separated.

    Raises ``OSError`` when the file cannot be read.
    """
    return _words(path.read_text(encoding="utf-8"))


def client_api_key() -> str | None:
    """The key ``iweblens client``, ``experiment`` and ``bench`` send (``IWEBLENS_API_KEY``)."""
    return os.environ.get("IWEBLENS_API_KEY") or None


@dataclass(frozen=True)
class Settings:
    """Everything the service can be tuned with; see the README's configuration table."""

    model_dir: Path = field(default_factory=default_model_dir)
    engine: str = "opencv"
    confidence: float = 0.5
    nms: float = 0.45
    input_size: int = 416
    max_body_bytes: int = 16 * 1024 * 1024
    # 4096 x 4096: decoding costs bytes per pixel, and a 512 MiB pod has ~140 MiB to spare.
    max_pixels: int = 16_777_216
    inference_workers: int = 0  # 0 = one per core of the CPU allotment
    served_by: str = field(default_factory=socket.gethostname)
    # Keys a detection request must present; none (and no file) means no key is needed.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    api_keys_file: Path | None = None  # a file of keys, re-read when it changes (a Secret)
    metrics_require_key: bool = True  # with keys configured, /metrics needs one too
    host: str = "0.0.0.0"
    port: int = 5000
    threads: int = 64
    keepalive: int = 5
    read_timeout: int = 30  # seconds a request may take to arrive in full (headers and body)
    timeout: int = 120
    graceful_timeout: int = 30

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
            api_keys=_words(_env("API_KEYS", "")),
            api_keys_file=Path(keys_file) if (keys_file := _env("API_KEYS_FILE", "")) else None,
            metrics_require_key=_yes("METRICS_REQUIRE_KEY", base.metrics_require_key),
            host=_env("HOST", base.host),
            port=int(_env("PORT", str(base.port))),
            threads=int(_env("THREADS", str(base.threads))),
            keepalive=int(_env("KEEPALIVE", str(base.keepalive))),
            read_timeout=int(_env("READ_TIMEOUT", str(base.read_timeout))),
            timeout=int(_env("TIMEOUT", str(base.timeout))),
            graceful_timeout=int(_env("GRACEFUL_TIMEOUT", str(base.graceful_timeout))),
        )
