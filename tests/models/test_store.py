import hashlib
import shutil
from pathlib import Path

import pytest

from iweblens.config import Settings
from iweblens.models.store import MODEL_FILES, ModelIntegrityError, ModelPaths, ModelStore
from iweblens.service.app import create_app


def copy_model(paths: ModelPaths, directory: Path) -> ModelStore:
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
    copy_model(model_paths, tmp_path)
    (tmp_path / "coco.names").write_text("not\nthe\nlabels\n")
    with pytest.raises(ModelIntegrityError, match=r"coco\.names"):
        create_app(Settings(model_dir=tmp_path))


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
