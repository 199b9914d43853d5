"""Who is calling: the API key, its tenant and its scopes.

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The key
table and its format belong to ``renderfarm.core.apikeys``; this module only
checks a presented key against it (digests compared in constant time).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading

import redis
from fastapi import Request

from renderfarm.api.errors import ApiError
from renderfarm.core.apikeys import ApiKeyRecord, Scope, hash_key, load_all, lookup, operator_record
from renderfarm.core.settings import Settings

_REFRESH_S = 2.0
log = logging.getLogger("renderfarm.api")


class KeyRing:
    """Known key digests. Keys stored in Redis are refreshed by a background thread,
    so checking a key never waits on Redis (and a Redis outage keeps the last set)."""

    def __init__(self, settings: Settings, client: redis.Redis):
        operator = operator_record()
        self.static: dict[str, ApiKeyRecord] = {hash_key(k.get_secret_value()): operator for k in settings.api_keys}
        self.static.update({h.lower(): operator for h in settings.api_key_hashes})
        self.client = client
        self._stored: dict[str, ApiKeyRecord] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        try:
            self._stored = load_all(self.client)
        except redis.exceptions.RedisError as exc:
            log.debug("cannot refresh API keys: %s", exc)

    def start(self) -> None:
        self.refresh()

        def loop() -> None:
            while not self._stop.wait(_REFRESH_S):
                self.refresh()

        self._thread = threading.Thread(target=loop, name="api-key-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def lookup_stored(self, presented: str) -> ApiKeyRecord | None:
        record = lookup(self.client, presented)
        if record is not None:
            self._stored = self._stored | {hash_key(presented): record}
        return record

    def record_for(self, presented: str) -> ApiKeyRecord | None:
        digest = hash_key(presented)
        for table in (self.static, self._stored):
            for known, record in table.items():
                if hmac.compare_digest(known, digest):
                    return record
        return None


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


async def require_key(request: Request) -> ApiKeyRecord:
    """Any valid key (401 otherwise)."""
    key = presented_key(request)
    if not key:
        raise ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer <key> or X-API-Key)",
                       headers={"WWW-Authenticate": "Bearer"})
    keyring: KeyRing = request.app.state.keyring
    record = keyring.record_for(key)
    if record is None:
        # A key created a moment ago works at once: one HGET for a key not seen yet.
        record = await asyncio.to_thread(keyring.lookup_stored, key)
    if record is None:
        raise ApiError(401, "unauthorized", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    return record


def _require_scope(record: ApiKeyRecord, scope: Scope) -> ApiKeyRecord:
    if not record.allows(scope):
        raise ApiError(403, "forbidden", f"this API key lacks the {scope.value!r} scope",
                       {"required_scope": scope.value, "key_scopes": sorted(record.scopes)})
    return record


# One dependency each, not a chain: every level of sub-dependency costs the hot
# routes (submit, status) time per request.
async def require_jobs(request: Request) -> str:
    """A key with the ``jobs`` scope; returns its tenant."""
    return _require_scope(await require_key(request), Scope.jobs).tenant


async def require_admin(request: Request) -> ApiKeyRecord:
    """A key with the ``admin`` scope."""
    return _require_scope(await require_key(request), Scope.admin)


async def require_jobs_key(request: Request) -> tuple[ApiKeyRecord, str]:
    """A key with the ``jobs`` scope and its id (a digest prefix, to record who acted; never the key)."""
    record = _require_scope(await require_key(request), Scope.jobs)
    return record, hash_key(presented_key(request) or "")[:12]
