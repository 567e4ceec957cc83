"""Optional API keys: with keys configured, the detection endpoints (and ``/metrics``) need one.

Keys come from ``IWEBLENS_API_KEYS`` (comma-separated) and ``IWEBLENS_API_KEYS_FILE`` (a mounted
Kubernetes Secret: one key per line; re-read when it changes, so a rotated Secret takes effect
without a restart). A request presents its key as ``Authorization: Bearer KEY``, ``X-API-Key:
KEY`` or, as DeepStack clients do, a multipart field ``api_key``; the first of these it carries is
the one checked. With no key configured nothing is checked, and a key sent (deepstack-python
always sends one, empty) is ignored. ``/healthz``, ``/readyz``, the page and ``/openapi.json``
are always open.

Keys are compared in constant time: the SHA-256 of the presented key against that of every
configured key, all of them every time (``hmac.compare_digest`` on equal-length digests, so
neither the position of a match nor a key's length shows in the timing). TLS is not this
module's job: terminate it at an Ingress or proxy in front, or keys travel in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from flask import Blueprint, Response, request
from werkzeug.datastructures import Headers

from iweblens.config import Settings, read_api_keys
from iweblens.service.protocol import ApiError

log = logging.getLogger(__name__)

DETECTION_ENDPOINTS = frozenset({"api.object_detection", "deepstack.detection"})
METRICS_ENDPOINT = "api.metrics"
KEY_FIELD = "api_key"
HOW_TO_SEND = "send Authorization: Bearer KEY, X-API-Key: KEY, or a multipart field api_key"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="iweblens"'}  # sent with every 401


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeys:
    """The configured keys, kept as digests; the key file is re-read when its mtime changes.

    Raises ``OSError`` at construction when a configured key file cannot be read.
    """

    def __init__(self, keys: Iterable[str] = (), key_file: Path | None = None) -> None:
        self._fixed = tuple(_digest(key) for key in keys)
        self._file = key_file
        self._lock = threading.Lock()
        self._file_stamp: int | None = None
        self._from_file: tuple[bytes, ...] = ()
        if key_file is not None:
            self._load(os.stat(key_file).st_mtime_ns)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        return cls(settings.api_keys, settings.api_keys_file)

    @property
    def enabled(self) -> bool:
        """Keys are required: some are configured, or a key file is (even an empty one)."""
        return bool(self._fixed) or self._file is not None

    def accepts(self, presented: str | None) -> bool:
        """True when no key is required, or ``presented`` is one of the keys."""
        if not self.enabled:
            return True
        if not presented:
            return False
        digest = _digest(presented)
        matched = False
        for known in (*self._fixed, *self._current_file_keys()):
            matched |= hmac.compare_digest(digest, known)
        return matched

    def _current_file_keys(self) -> tuple[bytes, ...]:
        if self._file is None:
            return ()
        try:
            stamp = os.stat(self._file).st_mtime_ns
        except OSError as error:
            self._warn_unreadable(error)
            return self._from_file
        if stamp != self._file_stamp:
            with self._lock:
                if stamp != self._file_stamp:
                    self._reload(stamp)
        return self._from_file

    def _reload(self, stamp: int) -> None:
        try:
            self._load(stamp)
        except OSError as error:
            self._warn_unreadable(error)

    def _warn_unreadable(self, error: OSError) -> None:
        log.warning("API key file %s unreadable, the keys read before stay: %s", self._file, error)

    def _load(self, stamp: int) -> None:
        assert self._file is not None
        keys = read_api_keys(self._file)
        if not keys:
            log.warning("API key file %s holds no key: every keyed request is refused", self._file)
        self._from_file = tuple(_digest(key) for key in keys)
        self._file_stamp = stamp


def presented_key(
    headers: Mapping[str, str] | Headers, form_field: Callable[[], str | None]
) -> str | None:
    """The key a request carries: Bearer token, else ``X-API-Key``, else the form field.

    ``form_field`` is called only when neither header is there, so a request that authenticates
    by header never has its body parsed here.
    """
    authorization = headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if header := headers.get("X-API-Key"):
        return header
    return form_field()


def auth_blueprint(keys: ApiKeys, metrics_require_key: bool) -> Blueprint:
    """A blueprint whose ``before_app_request`` hook refuses unauthenticated detection calls."""
    blueprint = Blueprint("auth", __name__)
    protected = DETECTION_ENDPOINTS | ({METRICS_ENDPOINT} if metrics_require_key else set())

    @blueprint.before_app_request
    def require_key() -> None:
        if not keys.enabled or request.endpoint not in protected:
            return
        require_key_of(keys, presented_key(request.headers, _form_key))

    @blueprint.after_app_request
    def challenge(response: Response) -> Response:
        if response.status_code == 401:
            response.headers.update(CHALLENGE)
        return response

    return blueprint


def require_key_of(keys: ApiKeys, key: str | None) -> None:
    """Return when ``keys`` accept ``key``; else ``ApiError`` 401 saying what was wrong."""
    if keys.accepts(key):
        return
    if key is None:
        raise ApiError(401, "unauthorized", f"this server needs an API key: {HOW_TO_SEND}")
    raise ApiError(401, "unauthorized", "the API key is not valid")


def _form_key() -> str | None:
    if request.mimetype != "multipart/form-data":
        return None
    return request.form.get(KEY_FIELD) or None
