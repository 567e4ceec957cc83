"""Optional API keys: with keys configured, the detection endpoints (and ``/metrics``) need one.

Keys come from ``IWEBLENS_API_KEYS`` (comma-separated) and ``IWEBLENS_API_KEYS_FILE`` (a mounted
Kubernetes Secret: one key per line, UTF-8 with or without a byte order mark; re-read when its
inode, size or mtime changes, so a rotated Secret takes effect without a restart, and a re-read
that finds no valid key keeps the keys read before). Keys must be ASCII, as HTTP headers are: a
key that is not stops the service at start-up. A request presents its key as ``Authorization:
Bearer KEY``, ``X-API-Key: KEY`` or, as DeepStack clients do, a multipart field ``api_key``; the
first of these it carries is the one checked. With no key configured nothing is checked, and a
key sent (deepstack-python always sends one, empty) is ignored. ``/healthz``, ``/readyz``, the
page and ``/openapi.json`` are always open.

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

from flask import Blueprint, request
from werkzeug.datastructures import Headers

from iweblens.config import Settings, env_name, read_api_keys
from iweblens.service.errors import ApiError

log = logging.getLogger(__name__)

DETECTION_ENDPOINTS = frozenset({"api.object_detection", "deepstack.detection", "deepstack.custom"})
KEY_FIELD = "api_key"
HOW_TO_SEND = "send Authorization: Bearer KEY, X-API-Key: KEY, or a multipart field api_key"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeyError(Exception):
    """A configured key is not ASCII, or the key file cannot be read when the service starts."""


# What identifies one version of the key file: device, inode, size and mtime (ns). A rewrite in
# place changes the size (truncated, then written) even where timestamps are coarse; a Secret
# volume swaps a new file in (a new inode).
FileStamp = tuple[int, int, int, int]


def _stamp(path: Path) -> FileStamp:
    status = os.stat(path)
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def _digests(keys: Iterable[str], source: str) -> tuple[bytes, ...]:
    """The keys' digests; ``ApiKeyError`` naming the first key (by number) that is not ASCII.

    HTTP headers carry ASCII (a key sent as UTF-8 arrives as Latin-1 characters), so such a key
    could never match; the message names its position, never the key.
    """
    digests = []
    for number, key in enumerate(keys, 1):
        if not key.isascii():
            raise ApiKeyError(
                f"{source}: key {number} is not ASCII; HTTP headers carry ASCII only, so it "
                "could never be presented: use letters, digits and punctuation"
            )
        digests.append(_digest(key))
    return tuple(digests)


class ApiKeys:
    """The configured keys, kept as digests; the key file is re-read when its stamp changes.

    A re-read that finds no key, cannot be read or decoded, or holds a key that is not ASCII
    keeps the keys read before (and is logged): a file caught between its truncation and its
    writing does not lock every client out. Raises ``ApiKeyError`` at construction when a key is
    not ASCII or the key file cannot be read (an empty file is accepted: every keyed request is
    then refused until it holds keys).
    """

    def __init__(self, keys: Iterable[str] = (), key_file: Path | None = None) -> None:
        self._fixed = _digests(keys, env_name("api_keys"))
        self._file = key_file
        self._lock = threading.Lock()
        self._file_stamp: FileStamp | None = None
        self._from_file: tuple[bytes, ...] = ()
        self._unreadable = False  # the last stat failed (logged once until it succeeds)
        if key_file is not None:
            try:
                self._file_stamp = _stamp(key_file)
                self._from_file = self._read()
            except (OSError, UnicodeDecodeError) as error:
                raise ApiKeyError(f"{self._source}: cannot be read: {error}") from None
            if not self._from_file:
                log.warning("%s holds no key: every keyed request is refused", self._source)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        return cls(settings.api_keys, settings.api_keys_file)

    @property
    def _source(self) -> str:
        return f"{env_name('api_keys_file')}={self._file}"

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
            return self._from_file
        try:
            stamp = _stamp(self._file)
        except OSError as error:
            if not self._unreadable:
                log.warning("%s unreadable, the keys read before stay: %s", self._source, error)
            self._unreadable = True
            return self._from_file
        self._unreadable = False
        if stamp != self._file_stamp:
            with self._lock:
                if stamp != self._file_stamp:
                    self._reload(stamp)
        return self._from_file

    def _reload(self, stamp: FileStamp) -> None:
        # The stamp is taken before the read: a change during the read shows as a new stamp.
        self._file_stamp = stamp
        try:
            keys = self._read()
        except (OSError, UnicodeDecodeError, ApiKeyError) as error:
            log.warning("%s not re-read, the keys read before stay: %s", self._source, error)
            return
        if not keys:
            log.warning("%s read empty, the keys read before stay", self._source)
            return
        self._from_file = keys

    def _read(self) -> tuple[bytes, ...]:
        assert self._file is not None
        return _digests(read_api_keys(self._file), self._source)


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


def auth_blueprint(keys: ApiKeys) -> Blueprint:
    """A blueprint whose ``before_app_request`` hook refuses unauthenticated detection calls.

    ``/metrics`` is answered by the front, which checks its key itself (``require_key_of``).
    """
    blueprint = Blueprint("auth", __name__)

    @blueprint.before_app_request
    def require_key() -> None:
        if not keys.enabled or request.endpoint not in DETECTION_ENDPOINTS:
            return
        require_key_of(keys, presented_key(request.headers, _form_key))

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
