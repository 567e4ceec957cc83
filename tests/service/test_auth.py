"""Optional API keys: enforced on the detection endpoints when configured, absent when not."""

from __future__ import annotations

import os
from pathlib import Path

import jsonschema
import pytest
import requests
from api_contract import schema
from support import API_KEYS, FrontClient, unstarted_front

from iweblens.config import Settings
from iweblens.service.auth import ApiKeyError, ApiKeys, presented_key


def detect(base_url: str, photo: Path, **kwargs: object) -> requests.Response:
    return requests.post(
        f"{base_url}/api/object_detection",
        files={"image": (photo.name, photo.read_bytes())},
        timeout=120,
        **kwargs,
    )


def refused(response: requests.Response) -> None:
    assert response.status_code == 401, response.text
    jsonschema.validate(response.json(), schema("Error"))
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="iweblens"'


def test_every_way_of_sending_a_key_is_accepted(keyed_server: str, photos: list[Path]) -> None:
    photo = photos[0]
    for key in API_KEYS:
        for sent in (
            {"headers": {"Authorization": f"Bearer {key}"}},
            {"headers": {"authorization": f"bearer {key}"}},
            {"headers": {"X-API-Key": key}},
            {"data": {"api_key": key}},
        ):
            response = detect(keyed_server, photo, **sent)
            assert response.status_code == 200, (sent, response.text)
            assert response.json()["objects"]


def test_requests_without_a_valid_key_are_refused(keyed_server: str, photos: list[Path]) -> None:
    photo = photos[0]
    refused(detect(keyed_server, photo))
    assert "Bearer" in detect(keyed_server, photo).json()["error"]["message"]
    for sent in (
        {"headers": {"Authorization": "Bearer wrong"}},
        {"headers": {"Authorization": f"Basic {API_KEYS[0]}"}},
        {"headers": {"X-API-Key": API_KEYS[0].upper()}},
        {"data": {"api_key": ""}},
        {"data": {"api_key": API_KEYS[0][:-1]}},
        # The first key a request carries is the one checked.
        {"headers": {"X-API-Key": "wrong"}, "data": {"api_key": API_KEYS[0]}},
    ):
        refused(detect(keyed_server, photo, **sent))
    raw = requests.post(
        f"{keyed_server}/api/object_detection",
        data=photo.read_bytes(),
        headers={"Content-Type": "image/jpeg"},
        timeout=60,
    )
    refused(raw)


def test_probes_page_and_document_stay_open(keyed_server: str) -> None:
    for path in ("/healthz", "/readyz", "/", "/openapi.json", "/static/app.js"):
        assert requests.get(f"{keyed_server}{path}", timeout=30).status_code == 200, path


def test_metrics_need_the_key_by_default(keyed_server: str) -> None:
    refused(requests.get(f"{keyed_server}/metrics", timeout=30))
    bearer = {"Authorization": f"Bearer {API_KEYS[0]}"}
    response = requests.get(f"{keyed_server}/metrics", headers=bearer, timeout=30)
    assert response.status_code == 200 and "iweblens_requests_total" in response.text


def test_without_keys_nothing_is_checked(live_server: str, photos: list[Path]) -> None:
    for sent in ({}, {"headers": {"Authorization": "Bearer anything"}}, {"data": {"api_key": ""}}):
        assert detect(live_server, photos[0], **sent).status_code == 200
    assert requests.get(f"{live_server}/metrics", timeout=30).status_code == 200


def test_metrics_can_be_left_open() -> None:
    keyed = FrontClient(unstarted_front(Settings(api_keys=("k",))))
    refused = keyed.get("/metrics")
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="iweblens"'
    assert keyed.get("/metrics", headers={"X-API-Key": "k"}).status_code == 200
    opened = Settings(api_keys=("k",), metrics_require_key=False)
    assert FrontClient(unstarted_front(opened)).get("/metrics").status_code == 200


def test_a_key_file_is_read_and_reread_when_it_changes(tmp_path: Path) -> None:
    secret = tmp_path / "api-keys"
    secret.write_text("alpha\n\n  beta  \n")
    keys = ApiKeys(key_file=secret)
    assert keys.enabled
    assert keys.accepts("alpha") and keys.accepts("beta")
    assert not keys.accepts("gamma") and not keys.accepts(None) and not keys.accepts("")
    secret.write_text("gamma")
    stat = secret.stat()
    os.utime(secret, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert keys.accepts("gamma") and not keys.accepts("alpha")
    secret.unlink()  # an unreadable file keeps the keys read before
    assert keys.accepts("gamma")


def test_an_empty_key_file_refuses_everything(tmp_path: Path) -> None:
    secret = tmp_path / "api-keys"
    secret.write_text("\n")
    keys = ApiKeys(key_file=secret)
    assert keys.enabled and not keys.accepts("") and not keys.accepts("anything")


def test_keys_from_the_environment_and_a_file_together(tmp_path: Path) -> None:
    secret = tmp_path / "api-keys"
    secret.write_text("from-file")
    keys = ApiKeys(["from-env"], secret)
    assert keys.accepts("from-env") and keys.accepts("from-file")
    assert not ApiKeys().enabled and ApiKeys().accepts(None)


def test_settings_read_the_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IWEBLENS_API_KEYS", " one, two ,,")
    monkeypatch.setenv("IWEBLENS_API_KEYS_FILE", "/run/secrets/iweblens/api-keys")
    monkeypatch.setenv("IWEBLENS_METRICS_REQUIRE_KEY", "0")
    settings = Settings.from_env()
    assert settings.api_keys == ("one", "two")
    assert settings.api_keys_file == Path("/run/secrets/iweblens/api-keys")
    assert settings.metrics_require_key is False
    assert "'one'" not in repr(settings) and "'two'" not in repr(settings)


def test_the_key_a_request_presents() -> None:
    def no_form() -> str | None:
        raise AssertionError("the body must not be read when a header has the key")

    assert presented_key({"Authorization": "Bearer  k1 "}, no_form) == "k1"
    assert presented_key({"X-API-Key": "k2"}, no_form) == "k2"
    assert presented_key({"Authorization": "Bearer "}, lambda: "k3") == "k3"
    assert presented_key({}, lambda: None) is None


def same_mtime(path: Path, mtime_ns: int) -> None:
    """As on a file system whose timestamps are coarser than the rewrite."""
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_key_file_rewritten_in_place_keeps_its_keys_while_empty(tmp_path: Path) -> None:
    secret = tmp_path / "api-keys"
    secret.write_text("alpha\n")
    keys = ApiKeys(key_file=secret)
    mtime = secret.stat().st_mtime_ns
    with secret.open("w"):  # truncated, and read while the writer has not written yet
        pass
    assert keys.accepts("alpha")
    same_mtime(secret, mtime + 1_000_000)
    assert keys.accepts("alpha")  # a new stamp, still empty: the keys read before stay
    secret.write_text("bravo\n")  # written, within the same timestamp tick
    same_mtime(secret, mtime + 1_000_000)
    assert keys.accepts("bravo") and not keys.accepts("alpha")


def test_a_same_size_rewrite_is_seen_by_its_inode(tmp_path: Path) -> None:
    """A Secret volume swaps a new file in: the inode changes, size and timestamp may not."""
    secret = tmp_path / "api-keys"
    secret.write_text("alpha\n")
    keys = ApiKeys(key_file=secret)
    mtime = secret.stat().st_mtime_ns
    replacement = tmp_path / "api-keys.new"
    replacement.write_text("bravo\n")
    same_mtime(replacement, mtime)
    replacement.replace(secret)
    assert keys.accepts("bravo") and not keys.accepts("alpha")


def test_a_key_file_saved_with_a_byte_order_mark_keeps_its_first_key(tmp_path: Path) -> None:
    secret = tmp_path / "api-keys"
    secret.write_bytes("\ufeffalpha\r\nbravo\r\n".encode())
    keys = ApiKeys(key_file=secret)
    assert keys.accepts("alpha") and keys.accepts("bravo")


@pytest.mark.parametrize(
    "content", [b"\xff\xfe not UTF-8 \xc3", "ascii\nnon-ascii-cl\u00e9\n".encode()]
)
def test_a_reread_that_fails_keeps_the_keys_read_before(tmp_path: Path, content: bytes) -> None:
    secret = tmp_path / "api-keys"
    secret.write_text("alpha\n")
    keys = ApiKeys(key_file=secret)
    secret.write_bytes(content)
    same_mtime(secret, secret.stat().st_mtime_ns + 1_000_000)
    assert keys.accepts("alpha") and not keys.accepts("ascii")


@pytest.mark.parametrize("where", ["environment", "file"])
def test_a_non_ascii_key_stops_the_app_from_starting(tmp_path: Path, where: str) -> None:
    """HTTP headers carry ASCII: a UTF-8 key arrives as other characters and never matches."""
    secret = tmp_path / "api-keys"
    secret.write_text("ascii\nschl\u00fcssel\n")
    settings = (
        Settings(api_keys=("ascii", "schl\u00fcssel"))
        if where == "environment"
        else Settings(api_keys_file=secret)
    )
    with pytest.raises(ApiKeyError) as raised:
        unstarted_front(settings)
    message = str(raised.value)
    assert "key 2" in message and "ASCII" in message
    assert "schl" not in message  # a key is a secret, even a bad one


def test_a_missing_key_file_stops_the_app_from_starting(tmp_path: Path) -> None:
    with pytest.raises(ApiKeyError, match="absent"):
        unstarted_front(Settings(api_keys_file=tmp_path / "absent"))
