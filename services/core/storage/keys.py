"""Object names and ``s3://`` references (pure).

Layout in the output bucket, under ``RF_S3_PREFIX``:
  ``<prefix>/<tenant>/<job id>/<output name>``   a job's outputs (retries overwrite them)
  ``<prefix>/<tenant>/uploads/<id>/<file name>``  presigned uploads (POST /v1/uploads)
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from renderfarm.core.storage.config import StorageSettings

UPLOADS = "uploads"
# S3 bucket naming rules (3-63 chars, lowercase, digits, dots, hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class StorageRefError(ValueError):
    """The storage reference is malformed or not allowed (HTTP 422 at submit)."""


@dataclass(frozen=True)
class ObjectRef:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> ObjectRef:
    parts = urlsplit(uri)
    if parts.scheme.lower() != "s3":
        raise StorageRefError(f"not an s3:// reference: {uri!r}")
    bucket = parts.netloc
    if not _BUCKET.match(bucket):
        raise StorageRefError(f"invalid bucket name {bucket!r}")
    if parts.query or parts.fragment:
        raise StorageRefError("s3:// references take no query or fragment")
    key = unquote(parts.path.lstrip("/"))
    if not key or key.endswith("/"):
        raise StorageRefError("s3:// reference names no object (s3://bucket/key)")
    if "\x00" in key or any(part in ("..", ".") for part in key.split("/")):
        raise StorageRefError("object key must not contain NUL, '.' or '..' segments")
    return ObjectRef(bucket, key)


def tenant_prefix(settings: StorageSettings, tenant: str) -> str:
    return "/".join(p for p in (settings.s3_prefix, tenant) if p) + "/"


def job_prefix(settings: StorageSettings, tenant: str, job_id: str) -> str:
    return f"{tenant_prefix(settings, tenant)}{job_id}/"


def output_ref(settings: StorageSettings, tenant: str, job_id: str, name: str) -> ObjectRef:
    if "/" in name or name in ("", ".", ".."):
        raise StorageRefError(f"invalid output name {name!r}")
    return ObjectRef(settings.s3_bucket, job_prefix(settings, tenant, job_id) + name)


def upload_ref(settings: StorageSettings, tenant: str, filename: str) -> ObjectRef:
    """A fresh key for a client upload: never an existing object, never another tenant's."""
    safe = _SAFE_NAME.sub("_", filename).strip("._") or "upload"
    return ObjectRef(settings.s3_bucket, f"{tenant_prefix(settings, tenant)}{UPLOADS}/{uuid.uuid4().hex}/{safe[:200]}")


def check_input_ref(settings: StorageSettings, tenant: str, ref: ObjectRef) -> ObjectRef:
    """May ``tenant`` read ``ref``? Buckets on the allow-lists are readable whole;
    in the farm's own bucket a tenant reads only under its own prefix (its uploads
    and outputs), never another tenant's."""
    explicit = set(settings.s3_allowed_input_buckets) | set(settings.s3_tenant_input_buckets.get(tenant, []))
    if ref.bucket in explicit:
        return ref
    if ref.bucket == settings.s3_bucket and settings.s3_bucket:
        if ref.key.startswith(tenant_prefix(settings, tenant)):
            return ref
        raise StorageRefError(f"s3://{ref.bucket}/ inputs must lie under {tenant_prefix(settings, tenant)}")
    raise StorageRefError(f"bucket {ref.bucket!r} is not an allowed input bucket")


def job_id_of(settings: StorageSettings, tenant: str, key: str) -> str | None:
    """The job id a key under a tenant's prefix belongs to (None for uploads or others)."""
    rest = key.removeprefix(tenant_prefix(settings, tenant))
    if rest == key or "/" not in rest:
        return None
    head = rest.split("/", 1)[0]
    return None if head == UPLOADS else head


def job_output_dir(outputs_root: Path, job_id: str) -> Path | None:
    """A job's output folder on the filesystem backend, or None when it would not sit
    directly under the root (``..``, a symlink out): then nothing there is removed."""
    root = outputs_root.resolve()
    candidate = (root / job_id).resolve()
    if candidate.parent != root or not job_id or job_id in (".", ".."):
        return None
    return candidate
