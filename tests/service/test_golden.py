"""The assignment's clients get today's answers, byte for byte (golden files in tests/golden/).

The 2020 reference client sends one multipart file part named ``image`` and prints the raw body;
the 2021 client sends ``{"id", "image"}`` double-encoded as JSON. Their answers on the committed
photographs were recorded from the service on 2026-11-30 and must never change by one byte
(``GOLDEN_UPDATE=1`` rewrites them, for a deliberate change only).
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from pathlib import Path

import pytest
import requests
from support import TESTS_DIR

GOLDEN_DIR = TESTS_DIR / "golden"
UPDATE = os.environ.get("GOLDEN_UPDATE") == "1"


def reference_2020(url: str, photo: Path) -> requests.Response:
    with photo.open("rb") as handle:
        return requests.post(url, files={"image": handle}, timeout=120)


def client_2021(url: str, photo: Path) -> requests.Response:
    data = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_OID, str(photo.name))),
        "image": base64.b64encode(photo.read_bytes()).decode(),
    }
    return requests.post(url, json=json.dumps(data), timeout=120)


CLIENTS = {"multipart": reference_2020, "json": client_2021}


@pytest.mark.parametrize("flavour", sorted(CLIENTS))
def test_answers_are_byte_identical_to_the_golden_files(
    live_server: str, photos: list[Path], flavour: str
) -> None:
    assert photos, "no committed photographs"
    for photo in photos:
        response = CLIENTS[flavour](f"{live_server}/api/object_detection", photo)
        assert response.status_code == 200, response.text
        golden = GOLDEN_DIR / f"{photo.stem}.{flavour}.json"
        if UPDATE:
            golden.write_bytes(response.content)
        assert response.content == golden.read_bytes(), photo.name
        assert response.headers["Content-Type"] == "application/json"
