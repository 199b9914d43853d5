"""API keys: only SHA-256 digests are kept, from settings and from Redis (``rf:apikeys``).

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Each
digest maps to a tenant name; idempotency keys are scoped per tenant.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import threading

import redis
from fastapi import Request

from renderfarm.api.errors import ApiError
from renderfarm.core.settings import Settings

API_KEYS = "rf:apikeys"  # hash: sha256 hex -> tenant
_REFRESH_S = 2.0
log = logging.getLogger("renderfarm.api")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return "rf_" + secrets.token_urlsafe(32)


def create_api_key(client: redis.Redis, tenant: str = "default") -> str:
    """Store a new key's digest in Redis and return the key (shown once)."""
    key = new_api_key()
    client.hset(API_KEYS, hash_key(key), tenant)
    return key


class KeyRing:
    """Known key digests. Keys stored in Redis are refreshed by a background thread,
    so checking a key never waits on Redis (and a Redis outage keeps the last set)."""

    def __init__(self, settings: Settings, client: redis.Redis):
        self.static: dict[str, str] = {hash_key(k.get_secret_value()): "default" for k in settings.api_keys}
        self.static.update({h.lower(): "default" for h in settings.api_key_hashes})
        self.client = client
        self._stored: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        try:
            self._stored = self.client.hgetall(API_KEYS)
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

    def lookup_stored(self, presented: str) -> str | None:
        digest = hash_key(presented)
        tenant = self.client.hget(API_KEYS, digest)
        if tenant is not None:
            self._stored = self._stored | {digest: tenant}
        return tenant

    def tenant_for(self, presented: str) -> str | None:
        digest = hash_key(presented)
        for table in (self.static, self._stored):
            for known, tenant in table.items():
                if hmac.compare_digest(known, digest):
                    return tenant
        return None


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


async def require_tenant(request: Request) -> str:
    key = presented_key(request)
    if not key:
        raise ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer <key> or X-API-Key)",
                       headers={"WWW-Authenticate": "Bearer"})
    keyring: KeyRing = request.app.state.keyring
    tenant = keyring.tenant_for(key)
    if tenant is None:
        # A key created a moment ago works at once: one HGET for a key not seen yet.
        tenant = await asyncio.to_thread(keyring.lookup_stored, key)
    if tenant is None:
        raise ApiError(401, "unauthorized", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    return tenant
