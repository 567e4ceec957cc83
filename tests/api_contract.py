"""The contract every answer of the detection endpoint honours, whatever was sent to it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import jsonschema
from support import TESTS_DIR

OPENAPI = json.loads((TESTS_DIR.parent / "src/iweblens/service/openapi.json").read_text())


def schema(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}


def check_answer(status: int, headers: Mapping[str, str], body: Any) -> None:
    """A 200 with a list of objects, or a 4xx in the one error shape: never a 5xx or a traceback."""
    assert status < 500, body
    assert headers["X-Served-By"]
    if status == 200:
        assert isinstance(body["objects"], list)
    else:
        jsonschema.validate(body, schema("Error"))
