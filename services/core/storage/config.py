"""Storage settings (``RF_STORAGE_*`` and ``RF_S3_*``), parsed once at the edge.

The filesystem is the default backend. With ``RF_STORAGE_BACKEND=s3`` outputs go
to ``s3://<RF_S3_BUCKET>/<RF_S3_PREFIX>/<tenant>/<job id>/<name>``. Credentials
come from ``RF_S3_ACCESS_KEY_ID``/``RF_S3_SECRET_ACCESS_KEY`` (the chart fills
them from a Secret) or, when unset, from boto3's own chain (``AWS_*``, a web
identity token, an instance profile). They are SecretStr: never printed, never
stored in a job record.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class StorageSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RF_", extra="ignore")

    storage_backend: Literal["filesystem", "s3"] = "filesystem"

    s3_endpoint: str = ""  # empty: AWS's own endpoint for the region
    # Where clients reach the server, if not at s3_endpoint (an in-cluster Service name):
    # presigned URLs are signed for this host.
    s3_public_endpoint: str = ""
    s3_region: str = "us-east-1"
    s3_bucket: str = ""
    s3_prefix: str = "renderfarm"
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    # Most self-hosted servers (SeaweedFS, MinIO, Ceph RGW) want path-style URLs.
    s3_path_style: bool = True
    s3_presign_ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    # Input buckets every tenant may read (the output bucket is always readable).
    s3_allowed_input_buckets: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Extra buckets per tenant, as JSON: {"media-team": ["raw-footage"]}.
    s3_tenant_input_buckets: Annotated[dict[str, list[str]], NoDecode] = Field(default_factory=dict)
    # Inputs larger than this are refused before a byte is written.
    s3_max_input_bytes: int = Field(default=50 * 1024**3, ge=1)
    # Multipart part size for outputs (S3's minimum is 5 MiB except for the last part).
    s3_part_size_bytes: int = Field(default=16 * 1024**2, ge=5 * 1024**2)
    s3_connect_timeout_s: float = Field(default=5.0, gt=0)
    s3_read_timeout_s: float = Field(default=60.0, gt=0)

    @field_validator("s3_allowed_input_buckets", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("s3_tenant_input_buckets", mode="before")
    @classmethod
    def _json(cls, value: object) -> object:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("s3_prefix", mode="after")
    @classmethod
    def _strip_slashes(cls, value: str) -> str:
        return value.strip("/")

    @property
    def s3_enabled(self) -> bool:
        return self.storage_backend == "s3"

    def input_buckets(self, tenant: str) -> frozenset[str]:
        """Buckets ``tenant`` may name in an ``s3://`` input."""
        buckets = set(self.s3_allowed_input_buckets) | set(self.s3_tenant_input_buckets.get(tenant, []))
        if self.s3_bucket:
            buckets.add(self.s3_bucket)
        return frozenset(buckets)


@lru_cache
def get_storage_settings() -> StorageSettings:
    return StorageSettings()
