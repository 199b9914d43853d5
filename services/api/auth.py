"""API keys: only SHA-256 digests are kept, from settings and from Redis (``rf:apikeys``).

A key is sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Each
digest maps to a tenant name; idempotency keys are scoped per tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import redis
from fastapi import Request

from renderfarm.api.errors import ApiError
from renderfarm.core.settings import Settings

API_KEYS = "rf:apikeys"  # hash: sha256 hex -> tenant
_CACHE_TTL_S = 2.0


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
    def __init__(self, settings: Settings, client: redis.Redis):
        self.static: dict[str, str] = {hash_key(k.get_secret_value()): "default" for k in settings.api_keys}
        self.static.update({h.lower(): "default" for h in settings.api_key_hashes})
        self.client = client
        self._stored: dict[str, str] = {}
        self._loaded_at = 0.0

    def _stored_keys(self) -> dict[str, str]:
        now = time.monotonic()
        if now - self._loaded_at > _CACHE_TTL_S:
            self._stored = self.client.hgetall(API_KEYS)
            self._loaded_at = now
        return self._stored

    def tenant_for(self, presented: str) -> str | None:
        digest = hash_key(presented)
        for table in (self.static, self._stored_keys()):
            for known, tenant in table.items():
                if hmac.compare_digest(known, digest):
                    return tenant
        return None


def presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("x-api-key")


def require_tenant(request: Request) -> str:
    key = presented_key(request)
    if not key:
        raise ApiError(401, "unauthorized", "an API key is required (Authorization: Bearer <key> or X-API-Key)",
                       headers={"WWW-Authenticate": "Bearer"})
    tenant = request.app.state.keyring.tenant_for(key)
    if tenant is None:
        raise ApiError(401, "unauthorized", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
    return tenant
