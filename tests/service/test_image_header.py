"""An image's header is read once per request: the service's check reads it, and the job carries
it to the inference thread, whose decoder follows that header's plan instead of reading it again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import FrontClient

import iweblens.inference.images as images
import iweblens.service.app as app
from iweblens.config import Settings
from iweblens.models.store import ModelPaths
from iweblens.service.front import build_front


@pytest.fixture(scope="module")
def client(model_paths: ModelPaths) -> Iterator[FrontClient]:
    front = build_front(Settings())
    assert front.pool.wait_ready(timeout=120), front.pool.failure
    yield FrontClient(front)
    front.pool.close()


def test_the_header_is_read_once_per_request(
    client: FrontClient, photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []
    read_header = images.read_header

    def counted(data: bytes, input_size: int | None = None) -> images.ImageHeader:
        reads.append(len(data))
        return read_header(data, input_size)

    monkeypatch.setattr(images, "read_header", counted)
    for photo in photos[:3]:
        reads.clear()
        answer = client.post(
            "/api/object_detection", data=photo.read_bytes(), content_type="image/jpeg"
        )
        assert answer.status_code == 200 and answer.json["objects"], photo.name
        assert reads == [photo.stat().st_size], photo.name


def test_the_decoding_cost_is_computed_once_per_request(
    client: FrontClient, photos: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header check and admission share one ``decode_cost`` of the header's plan."""
    costs: list[int] = []
    decode_cost = images.decode_cost

    def counted(header: images.ImageHeader) -> int:
        costs.append(decode_cost(header))
        return costs[-1]

    # Wherever the service may call it from: the header check's module and the routes'.
    monkeypatch.setattr(images, "decode_cost", counted)
    monkeypatch.setattr(app, "decode_cost", counted, raising=False)
    answer = client.post(
        "/api/object_detection", data=photos[0].read_bytes(), content_type="image/jpeg"
    )
    assert answer.status_code == 200
    assert len(costs) == 1
