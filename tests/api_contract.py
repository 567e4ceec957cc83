"""The contract every answer honours: the detection endpoint's whatever was sent to it, and each
operation's as the OpenAPI document describes it."""

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


def check_documented(method: str, path: str, status: int, body: Any) -> None:
    """``body`` is a JSON answer ``method path`` documents for ``status``, and fits its schema.

    ``path`` is the document's path template (``/v1/vision/custom/{model}``).
    """
    responses = OPENAPI["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} does not document {status}: {body}"
    response = responses[str(status)]
    if "$ref" in response:
        response = OPENAPI["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    answer_schema = response["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**answer_schema, "components": OPENAPI["components"]})
