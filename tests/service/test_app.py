"""The HTTP API, over real HTTP against a real server (``iweblens serve``) on loopback."""

import base64
import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest
import requests
from support import TESTS_DIR, ServerProcess, heic_header, png_declaring, run_reference_client

OPENAPI = json.loads((TESTS_DIR.parent / "src/iweblens/service/openapi.json").read_text())


def schema(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}", "components": OPENAPI["components"]}


def detect(url: str, photo: Path) -> requests.Response:
    with photo.open("rb") as handle:
        return requests.post(f"{url}/api/object_detection", files={"image": handle}, timeout=120)


def test_reference_client_runs_unchanged(live_server: str, photos: list[Path]) -> None:
    lines = run_reference_client(photos[0].parent, f"{live_server}/api/object_detection", 4)
    assert not [line for line in lines if line.startswith(("Error", "Exception"))]
    assert lines[-1].startswith("Total client script time: ")
    assert ", average thread time: " in lines[-1]
    answers = [json.loads(line) for line in lines[:-1]]
    assert len(answers) == len(photos)
    for answer in answers:
        jsonschema.validate(answer, schema("DetectionResult"))
    assert any(obj["label"] == "person" for answer in answers for obj in answer["objects"])


def test_multipart_answer_shape_and_headers(live_server: str, photos: list[Path]) -> None:
    photo = next(p for p in photos if p.name == "000000012807.jpg")
    response = detect(live_server, photo)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Served-By"] == "test-server"
    body = response.json()
    jsonschema.validate(body, schema("DetectionResult"))
    assert {"elephant", "person"} <= {obj["label"] for obj in body["objects"]}
    accuracies = [float(obj["accuracy"]) for obj in body["objects"]]
    assert accuracies == sorted(accuracies, reverse=True)
    assert all(50 < a <= 100 for a in accuracies)


@pytest.mark.parametrize("double_encoded", [False, True])
def test_json_flavours_echo_the_id(
    live_server: str, photos: list[Path], double_encoded: bool
) -> None:
    photo = photos[0]
    document = {"id": "6f1c-uuid5", "image": base64.b64encode(photo.read_bytes()).decode()}
    payload = json.dumps(document) if double_encoded else document
    response = requests.post(f"{live_server}/api/object_detection", json=payload, timeout=120)
    assert response.status_code == 200
    body = response.json()
    jsonschema.validate(body, schema("JsonDetectionResult"))
    assert body["id"] == "6f1c-uuid5"
    multipart = detect(live_server, photo).json()
    assert [o["label"] for o in body["objects"]] == [o["label"] for o in multipart["objects"]]
    assert [f"{o['accuracy'] * 100:.2f}" for o in body["objects"]] == [
        o["accuracy"] for o in multipart["objects"]
    ]


def test_raw_image_body(live_server: str, photos: list[Path]) -> None:
    photo = photos[1]
    response = requests.post(
        f"{live_server}/api/object_detection",
        data=photo.read_bytes(),
        headers={"Content-Type": "image/jpeg"},
        timeout=120,
    )
    assert response.status_code == 200
    assert response.json() == detect(live_server, photo).json()


def test_32_concurrent_requests_equal_the_sequential_answers(
    live_server: str, photos: list[Path]
) -> None:
    sequential = {photo: detect(live_server, photo).json() for photo in photos}
    work = (photos * 6)[:32]
    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(lambda photo: detect(live_server, photo), work))
    assert [r.status_code for r in responses] == [200] * 32
    assert [r.json() for r in responses] == [sequential[photo] for photo in work]


BAD_REQUESTS = [
    ("missing part", {"files": {"file": ("a.jpg", b"\xff\xd8")}}, 400, "missing_image"),
    ("empty file", {"files": {"image": ("a.jpg", b"")}}, 400, "empty_image"),
    ("not an image", {"files": {"image": ("a.jpg", b"hello world")}}, 400, "invalid_image"),
    (
        "truncated header",
        {"data": b"\x89PNG\r\n\x1a\n\x00", "headers": {"Content-Type": "image/png"}},
        400,
        "invalid_image",
    ),
    (
        "malformed json",
        {"data": b"{'id': 1", "headers": {"Content-Type": "application/json"}},
        400,
        "malformed_json",
    ),
    ("json without image", {"json": {"id": "x"}}, 400, "missing_image"),
    ("invalid base64", {"json": {"id": "x", "image": "%%%"}}, 400, "invalid_base64"),
    ("form fields", {"data": {"image": "x"}}, 415, "unsupported_media_type"),
    ("text body", {"data": b"x", "headers": {"Content-Type": "text/plain"}}, 415, None),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_input_gets_json_error_and_service_keeps_serving(
    live_server: str, photos: list[Path], kwargs: dict, status: int, code: str | None
) -> None:
    response = requests.post(f"{live_server}/api/object_detection", timeout=60, **kwargs)
    assert response.status_code == status
    jsonschema.validate(response.json(), schema("Error"))
    if code:
        assert response.json()["error"]["code"] == code
    assert detect(live_server, photos[0]).status_code == 200


def test_decompression_bomb_is_refused_before_decoding(live_server: str) -> None:
    response = requests.post(
        f"{live_server}/api/object_detection",
        files={"image": ("bomb.png", png_declaring(50_000, 50_000))},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "image_too_large"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/api/object_detection", 405, "method_not_allowed"),
        ("PUT", "/api/object_detection", 405, "method_not_allowed"),
        ("GET", "/no/such/page", 404, "not_found"),
    ],
)
def test_wrong_method_and_path(
    live_server: str, method: str, path: str, status: int, code: str
) -> None:
    response = requests.request(method, f"{live_server}{path}", timeout=30)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_operations_endpoints(live_server: str) -> None:
    assert requests.get(f"{live_server}/healthz", timeout=10).json() == {"status": "ok"}
    assert requests.get(f"{live_server}/readyz", timeout=10).json() == {"status": "ready"}
    assert requests.get(f"{live_server}/openapi.json", timeout=10).json() == OPENAPI
    metrics = requests.get(f"{live_server}/metrics", timeout=10).text
    for name in (
        "iweblens_requests_total",
        "iweblens_request_latency_seconds_bucket",
        "iweblens_queue_wait_seconds_bucket",
        "iweblens_inference_seconds_bucket",
        "iweblens_requests_in_flight",
    ):
        assert name in metrics


def test_body_over_the_limit_is_413() -> None:
    server = ServerProcess(env={"IWEBLENS_MAX_BODY_BYTES": "100000"})
    try:
        server.wait_ready()
        response = requests.post(
            f"{server.url}/api/object_detection",
            files={"image": ("big.jpg", b"\xff" * 200_000)},
            timeout=60,
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert requests.get(f"{server.url}/healthz", timeout=10).status_code == 200
    finally:
        assert server.stop() == 0


def test_sigterm_lets_in_flight_requests_finish(photos: list[Path]) -> None:
    server = ServerProcess()
    server.wait_ready()
    accepted = threading.Barrier(9)
    results: list[int] = []

    def client(photo: Path) -> None:
        with photo.open("rb") as handle:
            request = requests.Request(
                "POST", f"{server.url}/api/object_detection", files={"image": handle}
            ).prepare()
            with requests.Session() as session:
                accepted.wait()
                results.append(session.send(request, timeout=120).status_code)

    threads = [threading.Thread(target=client, args=(p,)) for p in (photos * 2)[:8]]
    for thread in threads:
        thread.start()
    accepted.wait()
    # Give the eight requests time to reach the server before the signal.
    threading.Event().wait(0.5)
    exit_code = server.stop(timeout=60)
    for thread in threads:
        thread.join()
    assert results == [200] * 8
    assert exit_code == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/healthz", timeout=5)


# ----------------------------------------------------------------------------- early refusals


EARLY_REFUSALS = [
    ("POST", "/api/object_detection", "text/plain", 415),
    ("POST", "/no/such/path", "image/jpeg", 404),
    ("PUT", "/api/object_detection", "image/jpeg", 405),
]


def refuse_then_detect(host: str, port: int, photo: Path, method: str, path: str, kind: str):
    """On one keep-alive connection: a refused request with an unread 65,536-byte body, then a
    valid detection. Returns both statuses; the second must come, whatever the first said."""
    connection = http.client.HTTPConnection(host, port, timeout=120)
    try:
        connection.request(method, path, body=b"x" * 65_536, headers={"Content-Type": kind})
        refusal = connection.getresponse()
        refusal.read()
        kept = not refusal.will_close  # the server promised to read the next request
        socket_before = connection.sock
        connection.request(
            "POST",
            "/api/object_detection",
            body=photo.read_bytes(),
            headers={"Content-Type": "image/jpeg"},
        )
        answer = connection.getresponse()
        answer.read()
        if kept:
            assert connection.sock is socket_before, "a kept-alive connection was replaced"
        return refusal.status, answer.status
    finally:
        connection.close()


@pytest.mark.parametrize(("method", "path", "kind", "status"), EARLY_REFUSALS)
def test_the_connection_survives_an_early_refusal(
    live_server: str, photos: list[Path], method: str, path: str, kind: str, status: int
) -> None:
    host, port = live_server.removeprefix("http://").split(":")
    statuses = refuse_then_detect(host, int(port), photos[0], method, path, kind)
    assert statuses == (status, 200)


def test_the_connection_survives_an_early_refusal_through_haproxy(
    live_server: str, photos: list[Path], tmp_path: Path
) -> None:
    from iweblens.harness.serving import free_port
    from iweblens.study.replicas.haproxy import Balancer, BalancerError, Server

    host, port = live_server.removeprefix("http://").split(":")
    try:
        balancer = Balancer("127.0.0.1", free_port(), tmp_path)
    except BalancerError as error:
        pytest.skip(str(error))
    try:
        balancer.configure([Server("replica-1", host, int(port))])
        for method, path, kind, status in EARLY_REFUSALS:
            statuses = refuse_then_detect("127.0.0.1", balancer.port, photos[0], method, path, kind)
            assert statuses == (status, 200)
    finally:
        balancer.close()


# ----------------------------------------------------------------------------- images end to end


def post_image(url: str, data: bytes, name: str = "photo.jpg") -> requests.Response:
    return requests.post(f"{url}/api/object_detection", files={"image": (name, data)}, timeout=120)


def test_a_heic_photo_is_unsupported_not_undecodable(live_server: str) -> None:
    response = post_image(live_server, heic_header(), "IMG_0001.HEIC")
    assert response.status_code == 415
    jsonschema.validate(response.json(), schema("Error"))
    error = response.json()["error"]
    assert error["code"] == "unsupported_image_format"
    assert "JPEG, PNG, WebP" in error["message"] and "not a decodable" not in error["message"]


def test_a_jpeg_missing_its_end_marker_gets_the_intact_answer(
    live_server: str, photos: list[Path]
) -> None:
    data = photos[1].read_bytes()
    intact = post_image(live_server, data)
    assert intact.status_code == 200 and intact.json()["objects"]
    assert post_image(live_server, data[:-2]).content == intact.content
    half = post_image(live_server, data[: len(data) // 2])
    assert half.status_code == 400 and half.json()["error"]["code"] == "invalid_image"


def test_a_24_megapixel_progressive_photo_is_answered_in_its_own_pixels(
    live_server: str, photos: list[Path]
) -> None:
    import cv2

    photo = next(p for p in photos if p.name == "000000012807.jpg")
    original = cv2.imread(str(photo))
    large = cv2.resize(original, (5656, 4242), interpolation=cv2.INTER_CUBIC)
    data = cv2.imencode(".jpg", large, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert len(data) < 16 * 2**20
    response = post_image(live_server, data)
    assert response.status_code == 200, response.text
    objects = response.json()["objects"]
    assert {"elephant", "person"} <= {o["label"] for o in objects}
    # Boxes are in the 24 MP image's pixels, not the 1/4 decode's.
    assert max(o["rectangle"]["left"] + o["rectangle"]["width"] for o in objects) > 2000


def test_a_non_finite_id_is_refused_in_strict_json(live_server: str, photos: list[Path]) -> None:
    encoded = base64.b64encode(photos[0].read_bytes()).decode()
    for literal in ("1e400", "NaN", "-1e999"):
        response = requests.post(
            f"{live_server}/api/object_detection",
            data=f'{{"id": {literal}, "image": "{encoded}"}}',
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=60,
        )
        assert response.status_code == 400
        body = json.loads(response.text, parse_constant=lambda bad: pytest.fail(bad))
        assert body["error"]["code"] == "non_finite_number"
