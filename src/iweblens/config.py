"""Settings, read once from ``IWEBLENS_*`` environment variables at the command line's edge.

This module is the package's only reader of ``IWEBLENS_*``: the command line builds ``Settings``
once and passes it down, and processes started for the study or the bench get theirs through
``Settings.to_env``. It imports nothing of ours.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ENV_PREFIX = "IWEBLENS_"

# Cores one pod may use: the Deployment's resources.limits.cpu (deploy/k8s/deployment.yaml), and
# so the quota the study's local replicas, the bench and the soak run under by default.
POD_CPUS = 0.5

# Where ``iweblens bench`` finds its photographs unless told (IWEBLENS_BENCH_IMAGES).
DEFAULT_BENCH_IMAGES = Path("../shared/images/coco128")


class SettingsError(ValueError):
    """An ``IWEBLENS_*`` variable (or a setting) holds a value the service cannot run with."""


def default_model_dir() -> Path:
    """Per-user cache folder for the model files (``$XDG_CACHE_HOME/iweblens/models``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "iweblens" / "models"


# Settings renamed after their variable was published keep that variable: setting -> its name.
VARIABLE_OF = {"model_wait_s": "timeout"}


def env_name(setting: str) -> str:
    """The variable of a setting: ``model_dir`` -> ``IWEBLENS_MODEL_DIR``."""
    return ENV_PREFIX + VARIABLE_OF.get(setting, setting).upper()


def bench_images() -> Path:
    """The folder ``iweblens bench`` measures on by default (``IWEBLENS_BENCH_IMAGES``)."""
    return Path(os.environ.get(env_name("bench_images"), str(DEFAULT_BENCH_IMAGES)))


@dataclass(frozen=True)
class Settings:
    """Everything the service can be tuned with; see the README's configuration table.

    Raises ``SettingsError`` for a value out of range. The engine name is checked against the
    engine registry where the service starts (``iweblens serve``), not here: this module imports
    nothing of ours.
    """

    model_dir: Path = field(default_factory=default_model_dir)
    # The real models this server loads, the first its default (models/repository.py).
    models: tuple[str, ...] = ("yolov3-tiny",)
    # A folder of the user's own models, one subfolder each (None: the bundled ones only).
    custom_models_dir: Path | None = None
    engine: str = "opencv"
    confidence: float = 0.5
    nms: float = 0.45
    input_size: int = 416
    max_body_bytes: int = 16 * 1024 * 1024
    # Decoded pixels, after any reduced JPEG decode: 4000 x 3000. Decoding costs ~6 bytes a pixel
    # (OpenCV's JPEG decoder holds two copies at its peak) and a 512 MiB pod has ~96 MiB for
    # requests, so one maximal request fits with room to spare (docs/reliability.md).
    max_pixels: int = 12_000_000
    # Pixels a header may declare: 48 MP phone photos (8064 x 6048), which are decoded at 1/8.
    max_declared_pixels: int = 50_000_000
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
    model_wait_s: int = 120  # seconds a request waits for the networks to load (IWEBLENS_TIMEOUT)
    graceful_timeout: int = 30
    # Longest expected wait in the inference queue before a request is refused (503). 1 pod x 32
    # reference-client threads waits ~4.6 s (p99 ~5.6 s) on the study's machine, and 2-3x that on
    # a busy shared one (16 s seen): 30 s leaves the study error-free with margin.
    max_wait: float = 30.0
    # Bytes of requests in flight (bodies, decoding); 0 = the memory limit less what the loaded
    # networks and the process take, less a margin (see service/admission.py and sizing).
    memory_budget: int = 0
    # Open connections; past it another one is closed to make room (``service/server.py``).
    max_connections: int = 1000

    def __post_init__(self) -> None:
        checks = {
            "models": len(self.models) >= 1,
            "confidence": 0 <= self.confidence <= 1,
            "nms": 0 <= self.nms <= 1,
            # darknet's input must be a multiple of the network's stride, 32.
            "input_size": self.input_size > 0 and self.input_size % 32 == 0,
            "max_body_bytes": self.max_body_bytes > 0,
            "max_pixels": self.max_pixels > 0,
            "max_declared_pixels": self.max_declared_pixels >= self.max_pixels,
            "inference_workers": self.inference_workers >= 0,
            "port": 0 <= self.port <= 65535,
            "threads": self.threads >= 1,
            "keepalive": self.keepalive >= 0,
            "read_timeout": self.read_timeout > 0,
            "model_wait_s": self.model_wait_s >= 0,
            "graceful_timeout": self.graceful_timeout >= 0,
            "max_wait": self.max_wait > 0,
            "memory_budget": self.memory_budget >= 0,
            "max_connections": self.max_connections >= 1,
        }
        for name, valid in checks.items():
            if not valid:
                value = getattr(self, name)
                raise SettingsError(f"{env_name(name)}={value} is out of range")

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from the environment, falling back to the defaults above.

        Raises ``SettingsError`` naming the variable whose value is not of the setting's type
        or out of range.
        """
        values: dict[str, object] = {}
        for setting in dataclasses.fields(cls):
            text = os.environ.get(env_name(setting.name))
            if text is None:
                continue
            convert, kind = _PARSERS[str(setting.type)]
            try:
                values[setting.name] = convert(text)
            except ValueError:
                raise SettingsError(f"{env_name(setting.name)}={text!r} is not {kind}") from None
        return cls(**values)  # type: ignore[arg-type]

    @staticmethod
    def to_env(**values: object) -> dict[str, str]:
        """The ``IWEBLENS_*`` variables that give another process these settings.

        ``Settings.to_env(port=5001, engine=None)`` -> ``{"IWEBLENS_PORT": "5001"}``: a None
        value is left out, so that process keeps its own default. Raises ``TypeError`` for a
        name that is not a setting.
        """
        known = {setting.name for setting in dataclasses.fields(Settings)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"not settings: {', '.join(unknown)}")
        return {
            env_name(name): _format(value) for name, value in values.items() if value is not None
        }


def _words(text: str) -> tuple[str, ...]:
    """Comma- or newline-separated words, stripped, empty ones dropped."""
    return tuple(word.strip() for word in text.replace("\n", ",").split(",") if word.strip())


def _yes(text: str) -> bool:
    word = text.strip().lower()
    if word in {"1", "true", "yes", "on"}:
        return True
    if word in {"0", "false", "no", "off"}:
        return False
    raise ValueError(text)


def _format(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def read_api_keys(path: Path) -> tuple[str, ...]:
    """The keys in a key file (a mounted Secret): one per line or comma-separated, UTF-8 with or
    without a byte order mark (as Windows editors save it).

    Raises ``OSError`` when the file cannot be read, ``UnicodeDecodeError`` when it is not UTF-8.
    """
    return _words(path.read_text(encoding="utf-8-sig"))


def client_api_key() -> str | None:
    """The key ``iweblens client``, ``experiment`` and ``bench`` send (``IWEBLENS_API_KEY``)."""
    return os.environ.get(env_name("api_key")) or None


# Settings' annotations (strings, under ``from __future__ import annotations``) -> how to read one.
_PARSERS: dict[str, tuple[Callable[[str], object], str]] = {
    "Path": (Path, "a path"),
    "Path | None": (lambda text: Path(text) if text else None, "a path"),
    "tuple[str, ...]": (_words, "comma-separated words"),
    "bool": (_yes, "1/0, true/false, yes/no or on/off"),
    "str": (str, "text"),
    "int": (int, "a whole number"),
    "float": (float, "a number"),
}
