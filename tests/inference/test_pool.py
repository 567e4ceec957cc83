"""The inference pool and the readiness it reports, with the real model."""

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support import FrontClient

from iweblens.config import Settings
from iweblens.inference.detector import Detector
from iweblens.inference.engines import create_engine
from iweblens.inference.pool import InferencePool, ModelUnavailableError, model_card
from iweblens.models.store import ModelPaths
from iweblens.service.front import build_front


def make_detector_factory(model_paths: ModelPaths, gate: threading.Event | None = None):
    def make() -> Detector:
        if gate is not None:
            gate.wait(60)
        return Detector(create_engine("opencv", model_paths), model_paths.labels())

    return make


def test_readyz_is_503_until_the_model_is_warm(model_paths: ModelPaths, photos: list[Path]) -> None:
    gate = threading.Event()
    card = model_card(Settings(), model_paths)
    pool = InferencePool(make_detector_factory(model_paths, gate), workers=1, model=card)
    pool.start()
    client = FrontClient(build_front(Settings(model_dir=model_paths.cfg.parent), pool=pool))
    loading = client.get("/readyz")
    assert (loading.status_code, loading.json) == (503, {"status": "loading"})
    gate.set()
    assert pool.wait_ready(60)
    assert client.get("/readyz").status_code == 200
    response = client.post(
        "/api/object_detection", data=photos[0].read_bytes(), content_type="image/jpeg"
    )
    assert response.status_code == 200 and response.json["objects"]
    pool.close()


def test_a_model_that_fails_to_load_is_reported(
    model_paths: ModelPaths, photos: list[Path]
) -> None:
    def broken() -> Detector:
        raise OSError("weights unreadable")

    pool = InferencePool(broken, workers=1, model=model_card(Settings(), model_paths))
    pool.start()
    assert not pool.wait_ready(60)
    client = FrontClient(build_front(Settings(model_dir=model_paths.cfg.parent), pool=pool))
    readyz = client.get("/readyz")
    assert readyz.status_code == 503 and "weights unreadable" in readyz.json["reason"]
    response = client.post(
        "/api/object_detection", data=photos[0].read_bytes(), content_type="image/jpeg"
    )
    assert response.status_code == 503
    assert response.json["error"]["code"] == "model_unavailable"
    with pytest.raises(ModelUnavailableError):
        pool.submit(b"x")


def test_one_network_serves_many_waiting_requests(
    model_paths: ModelPaths, photos: list[Path]
) -> None:
    timings: list[tuple[float, float]] = []
    pool = InferencePool(
        make_detector_factory(model_paths),
        workers=1,
        observe=lambda model, wait, run: timings.append((wait, run)),
        model=model_card(Settings(), model_paths),
    )
    pool.start()
    assert pool.wait_ready(60)
    expected = {p: pool.submit(p.read_bytes()).result() for p in photos}
    work = (photos * 6)[:32]
    with ThreadPoolExecutor(max_workers=32) as clients:
        answers = list(clients.map(lambda p: pool.submit(p.read_bytes()).result(), work))
    assert answers == [expected[p] for p in work]
    assert len(timings) == len(photos) + 32
    # With one network, 32 simultaneous requests queue: most of them wait.
    assert sum(1 for wait, _ in timings[-32:] if wait > 0) > 16
    pool.close()


def test_threads_in_the_pool_are_bounded(model_paths: ModelPaths) -> None:
    card = model_card(Settings(), model_paths)
    pool = InferencePool(make_detector_factory(model_paths), workers=2, model=card)
    pool.start()
    assert pool.wait_ready(60)
    names = [t.name for t in threading.enumerate() if t.name.startswith("inference-")]
    assert sorted(names) == ["inference-0", "inference-1"]
    pool.close()
