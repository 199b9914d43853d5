"""API keys: the one owner of the key table (``rf:apikeys``) and its record format.

Only a key's SHA-256 digest is ever stored. Each digest maps to a JSON record
``{"tenant": "<name>", "scopes": ["jobs", "admin"]}``:

- the tenant owns every job submitted with the key; other tenants' jobs are
  invisible to it (a 404, like a job that does not exist);
- ``jobs`` lets a key submit and read its own tenant's jobs;
- ``admin`` lets a key control the farm (pause and resume queues, read workers
  and farm-wide stats).

Keys given to the API in its environment (``RF_API_KEYS`` / ``RF_API_KEY_HASHES``)
belong to the ``default`` tenant and carry every scope: they are the operator's.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from enum import StrEnum

import redis
from pydantic import BaseModel, ConfigDict, field_validator

API_KEYS = "rf:apikeys"  # hash: sha256 hex digest -> JSON ApiKeyRecord
DEFAULT_TENANT = "default"
# Tenant names end up in Redis key names (per-tenant indexes): no colons, no spaces.
TENANT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class Scope(StrEnum):
    jobs = "jobs"
    admin = "admin"


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)


class ApiKeyRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    tenant: str
    scopes: frozenset[Scope]

    @field_validator("tenant")
    @classmethod
    def _tenant(cls, value: str) -> str:
        return check_tenant(value)

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: frozenset[Scope]) -> frozenset[Scope]:
        if not value:
            raise ValueError("an API key needs at least one scope")
        return value

    def allows(self, scope: Scope) -> bool:
        return scope in self.scopes


def check_tenant(name: str) -> str:
    if not TENANT_PATTERN.fullmatch(name):
        raise ValueError(f"tenant {name!r} is not valid: 1-64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)")
    return name


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return "rf_" + secrets.token_urlsafe(32)


# --- record format (pure) ----------------------------------------------------------


def encode_record(record: ApiKeyRecord) -> str:
    return json.dumps({"tenant": record.tenant, "scopes": sorted(s.value for s in record.scopes)},
                      separators=(",", ":"))


def decode_record(raw: str | None) -> ApiKeyRecord | None:
    """A stored value as a record; None when it cannot be read (such a key never works).

    A bare tenant name is what keys were stored as before scopes existed: it reads
    as that tenant with the ``jobs`` scope only (least privilege)."""
    if not raw:
        return None
    try:
        if raw.startswith("{"):
            data = json.loads(raw)
            return ApiKeyRecord(tenant=data["tenant"], scopes=frozenset(data["scopes"]))
        return ApiKeyRecord(tenant=raw, scopes=frozenset({Scope.jobs}))
    except (ValueError, KeyError, TypeError):
        return None


def operator_record() -> ApiKeyRecord:
    """What a key from the API's own environment may do."""
    return ApiKeyRecord(tenant=DEFAULT_TENANT, scopes=ALL_SCOPES)


# --- Redis (thin) --------------------------------------------------------------------------


def store_api_key(client: redis.Redis, key: str, record: ApiKeyRecord) -> None:
    client.hset(API_KEYS, hash_key(key), encode_record(record))


def create_api_key(client: redis.Redis, tenant: str = DEFAULT_TENANT,
                   scopes: frozenset[Scope] | set[Scope] = frozenset({Scope.jobs})) -> str:
    """Store a new key's digest with its tenant and scopes; return the key (shown once)."""
    record = ApiKeyRecord(tenant=tenant, scopes=frozenset(scopes))
    key = new_api_key()
    store_api_key(client, key, record)
    return key


def lookup(client: redis.Redis, key: str) -> ApiKeyRecord | None:
    return decode_record(client.hget(API_KEYS, hash_key(key)))


def load_all(client: redis.Redis) -> dict[str, ApiKeyRecord]:
    """digest -> record for every readable stored key."""
    out = {}
    for digest, raw in client.hgetall(API_KEYS).items():
        record = decode_record(raw)
        if record is not None:
            out[digest] = record
    return out
