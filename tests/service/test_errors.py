"""The error vocabulary: one module holds every code, the OpenAPI document lists the same codes,
every code raised anywhere in the service is in it, and every failure, the front's or the app's,
is rendered by the one renderer (native shape, or DeepStack's on its endpoint)."""

from __future__ import annotations

import ast
import inspect
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from api_contract import OPENAPI, schema
from support import REPO_DIR, FrontClient, unstarted_front

import iweblens.service.errors as errors_module
from iweblens.config import Settings
from iweblens.detection import DetectionParams, Inference, ModelCard
from iweblens.inference.detector import Detector
from iweblens.inference.engines import SCORE_FLOOR, create_engine
from iweblens.inference.images import ImageHeader
from iweblens.inference.pool import InferencePool
from iweblens.models.store import ModelPaths
from iweblens.service.admission import Shed
from iweblens.service.app import create_app
from iweblens.service.errors import CHALLENGE, CODES, ApiError, render
from iweblens.service.front import PROBE_PATHS, build_front

SERVICE_DIR = REPO_DIR / "src" / "iweblens" / "service"


def raised_codes() -> Iterator[tuple[Path, int, int | None, str]]:
    """``(file, line, status, code)`` of every ``ApiError(status, "code", ...)`` in the service
    (status None where it is not a literal)."""
    for path in sorted(SERVICE_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id != "ApiError" or len(node.args) < 2:
                continue
            status, code = node.args[0], node.args[1]
            if isinstance(code, ast.Constant) and isinstance(code.value, str):
                literal = status.value if isinstance(status, ast.Constant) else None
                yield path, node.lineno, literal, code.value


def test_the_openapi_document_lists_every_code() -> None:
    assert OPENAPI["components"]["schemas"]["ErrorCode"]["enum"] == list(CODES)


def test_every_code_raised_is_in_the_vocabulary_with_its_status() -> None:
    found = list(raised_codes())
    assert len(found) > 20  # the scan sees the service's refusals
    for path, line, status, code in found:
        assert code in CODES, f"{path.name}:{line}: {code} is not in errors.CODES"
        if status is not None:
            assert CODES[code].status == status, f"{path.name}:{line}: {code} is {status}"
    for reason in ("memory", "wait", "shutdown"):
        shed = Shed(reason, "refused", 1)
        assert CODES[shed.code].status == shed.status == 503


def test_the_module_states_every_public_name() -> None:
    public = {
        name
        for name, value in vars(errors_module).items()
        if not name.startswith("_")
        and not inspect.ismodule(value)
        and getattr(value, "__module__", errors_module.__name__) == errors_module.__name__
        and name not in ("annotations", "log")
    }
    assert public == set(errors_module.__all__)


def test_deepstack_wording_and_the_challenge() -> None:
    body, headers = render(ApiError(401, "unauthorized", "the API key is not valid"), True)
    assert json.loads(body) == {"success": False, "error": "Incorrect api key", "code": 401}
    assert headers == CHALLENGE
    body, headers = render(ApiError(400, "invalid_option", "min_confidence cannot be"), False)
    assert body == b'{"error":{"code":"invalid_option","message":"min_confidence cannot be"}}\n'
    assert headers == {}


def test_the_app_holds_routes_only_and_one_typed_object() -> None:
    front = unstarted_front(Settings())
    app = create_app(front.service)
    assert app.extensions == {"iweblens": front.service}
    assert not {rule.rule for rule in app.url_map.iter_rules()} & PROBE_PATHS


def test_the_front_stamps_counts_and_logs_the_apps_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    front = unstarted_front(Settings(served_by="pod-7"))
    client = FrontClient(front)
    with caplog.at_level(logging.INFO, logger="iweblens.access"):
        answer = client.get("/no/such/page", headers={"X-Request-ID": "abc-123"})
    assert answer.status_code == 404
    assert answer.headers["X-Served-By"] == "pod-7"
    assert answer.headers["X-Request-ID"] == "abc-123"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    jsonschema.validate(answer.json, schema("Error"))
    assert answer.json["error"]["code"] == "not_found"
    assert [r.getMessage().split()[:3] for r in caplog.records] == [["GET", "/no/such/page", "404"]]
    text = front.metrics.render().decode()
    assert 'iweblens_requests_total{method="GET",route="unmatched",status="404"} 1.0' in text
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers.getlist("X-Content-Type-Options") == ["nosniff"]
    assert 'route="/",status="200"} 1.0' in front.metrics.render().decode()


class FailingDetector(Detector):
    """The real detector with a bug: every detection raises an exception nobody expects."""

    def run(
        self, data: bytes, params: DetectionParams | None = None, header: ImageHeader | None = None
    ) -> Inference:
        raise RuntimeError("a bug in the detector")


@pytest.fixture(scope="module")
def failing_front(model_paths: ModelPaths) -> Iterator[FrontClient]:
    def make() -> Detector:
        return FailingDetector(create_engine("opencv", model_paths), model_paths.labels())

    card = ModelCard("yolov3-tiny", "opencv", "", 416, (), SCORE_FLOOR)
    front = build_front(Settings(), pool=InferencePool(make, workers=1, model=card))
    front.pool.start()
    assert front.pool.wait_ready(120), front.pool.failure
    yield FrontClient(front)
    front.pool.close()


def test_an_unexpected_error_is_one_500_on_both_endpoints(
    failing_front: FrontClient, photos: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    image = photos[0].read_bytes()
    with caplog.at_level(logging.ERROR, logger="iweblens.service.errors"):
        native = failing_front.post("/api/object_detection", data=image, content_type="image/jpeg")
    assert "RuntimeError: a bug in the detector" in caplog.text  # logged with its stack trace
    assert native.status_code == 500
    assert native.json == {
        "error": {"code": "internal_error", "message": "the server failed to handle the request"}
    }
    deepstack = failing_front.post(
        "/v1/vision/detection", data={"image": (photos[0].open("rb"), "a.jpg")}
    )
    assert deepstack.status_code == 500
    assert deepstack.json == {
        "success": False,
        "error": "error occurred on the server",
        "code": 500,
    }
    for answer in (native, deepstack):
        assert answer.headers["X-Served-By"] and answer.headers["X-Request-ID"]


@pytest.mark.parametrize("path", sorted(PROBE_PATHS))
def test_probe_paths_answer_other_methods_as_a_route_does(path: str) -> None:
    client = FrontClient(unstarted_front(Settings()))
    refused = client.open(path, method="TRACE")
    assert refused.status_code == 405
    assert refused.json["error"]["code"] == "method_not_allowed"
    assert set(refused.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    options = client.open(path, method="OPTIONS")
    assert (options.status_code, options.data) == (200, b"")
    assert set(options.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
