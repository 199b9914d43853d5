"""The storage edge: where job inputs come from and job outputs go.

Two backends behind the same few calls:
- the local filesystem (the embedded default): ``file://`` inputs under the
  allowed roots, outputs in ``<data_dir>/outputs/<job id>/``, renamed into place;
- S3-compatible object storage (``RF_STORAGE_BACKEND=s3``): ``s3://`` inputs from
  allowed buckets, outputs multipart-uploaded to
  ``s3://<bucket>/<prefix>/<tenant>/<job id>/<name>``, presigned GET URLs for
  clients, presigned PUTs for uploads.

Other code calls these functions, never boto3 or the output folders directly;
``delete_job_outputs`` is the one way to remove a job's outputs.
"""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Callable

from renderfarm.core.jobs import Job, OutputRef
from renderfarm.core.storage.config import StorageSettings, get_storage_settings
from renderfarm.core.storage.errors import StorageError, Stopped
from renderfarm.core.storage.keys import (
    ObjectRef,
    StorageRefError,
    check_input_ref,
    job_output_dir,
    job_prefix,
    output_ref,
    parse_s3_uri,
    upload_ref,
)

__all__ = [
    "ObjectRef", "StorageError", "StorageRefError", "StorageSettings", "Stopped", "check_s3_input",
    "delete_job_outputs", "fetch_s3_input", "get_storage_settings", "presign_output", "publish_s3_output",
    "s3_storage", "signed_outputs", "upload_target",
]


_clients: dict[str, object] = {}


def _s3_for(settings: StorageSettings):
    """One client per distinct settings per process (boto3 clients are thread-safe)."""
    from renderfarm.core.storage.s3 import S3Storage  # boto3 loads only where S3 is used

    key = settings.model_dump_json()
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = S3Storage(settings)
    return client


def s3_storage(settings: StorageSettings | None = None):
    """The S3 client of these settings (one per process), or None on the filesystem backend."""
    settings = settings or get_storage_settings()
    if not settings.s3_enabled:
        return None
    return _s3_for(settings)


def _s3_client_for_inputs(settings: StorageSettings):
    # s3:// inputs are readable from allowed buckets even when outputs stay on the filesystem.
    return _s3_for(settings)


# --- inputs --------------------------------------------------------------------------------


def check_s3_input(uri: str, tenant: str, *, must_exist: bool = True,
                   settings: StorageSettings | None = None) -> ObjectRef:
    """Submit-time check of an ``s3://`` input: an allowed bucket (and, in the farm's
    own bucket, the tenant's own prefix), and the object there when a HEAD can tell.
    Raises StorageRefError (not allowed, missing) or StorageError (cannot ask)."""
    settings = settings or get_storage_settings()
    ref = check_input_ref(settings, tenant, parse_s3_uri(uri))
    if must_exist:
        try:
            info = _s3_client_for_inputs(settings).head(ref)
        except StorageError as exc:
            if exc.reason == "no_bucket":
                raise StorageRefError(str(exc)) from None
            raise
        if info is None:
            raise StorageRefError(f"input {ref.uri} does not exist")
        if info.size_bytes > settings.s3_max_input_bytes:
            raise StorageRefError(f"input is {info.size_bytes} bytes; the limit is {settings.s3_max_input_bytes}")
    return ref


def fetch_s3_input(uri: str, tenant: str, work_dir: Path, *, should_stop: Callable[[], bool] = lambda: False,
                   settings: StorageSettings | None = None) -> Path:
    """Stream an ``s3://`` input into the job's work folder (checked again: the
    settings may have changed since submit)."""
    settings = settings or get_storage_settings()
    ref = check_input_ref(settings, tenant, parse_s3_uri(uri))
    name = ref.key.rsplit("/", 1)[-1]
    target = work_dir / f"input-{name}"[:200]
    return _s3_client_for_inputs(settings).download(ref, target, limit=settings.s3_max_input_bytes,
                                                    should_stop=should_stop)


# --- outputs -------------------------------------------------------------------------------


def publish_s3_output(source: Path, tenant: str, job_id: str, name: str, media_type: str | None, *,
                      should_stop: Callable[[], bool] = lambda: False,
                      settings: StorageSettings | None = None) -> tuple[OutputRef, str]:
    """Upload a finished local file as the job's output ``name`` (a retry overwrites it).
    Returns the output and the ETag written (what a cleanup compares before deleting)."""
    settings = settings or get_storage_settings()
    ref = output_ref(settings, tenant, job_id, name)
    info = _s3_for(settings).upload(source, ref, media_type=media_type, should_stop=should_stop)
    return OutputRef(name=name, uri=ref.uri, media_type=media_type, size_bytes=info.size_bytes,
                     checksum=info.checksum), info.etag


def presign_output(output: OutputRef, settings: StorageSettings | None = None) -> tuple[str, datetime] | None:
    """A fresh presigned GET for an ``s3://`` output; None for other outputs."""
    if not output.uri.startswith("s3://"):
        return None
    settings = settings or get_storage_settings()
    return _s3_for(settings).presign_get(parse_s3_uri(output.uri), filename=output.name)


def signed_outputs(job: Job, settings: StorageSettings | None = None) -> Job:
    """The job as a client sees it: each ``s3://`` output with a fresh presigned
    ``url`` and its ``expires_at``. Signatures are made per read and never stored."""
    if job.result is None or not any(o.uri.startswith("s3://") for o in job.result.outputs):
        return job
    outputs = []
    for output in job.result.outputs:
        signed = presign_output(output, settings)
        outputs.append(output.model_copy(update={"url": signed[0], "expires_at": signed[1]}) if signed else output)
    return job.model_copy(update={"result": job.result.model_copy(update={"outputs": outputs})})


def upload_target(tenant: str, filename: str, media_type: str | None = None,
                  settings: StorageSettings | None = None) -> tuple[ObjectRef, str, datetime, dict[str, str]]:
    """A new key in the tenant's prefix and a presigned PUT for it."""
    settings = settings or get_storage_settings()
    ref = upload_ref(settings, tenant, filename)
    url, expires_at, headers = _s3_for(settings).presign_put(ref, media_type=media_type)
    return ref, url, expires_at, headers


def delete_job_outputs(job_id: str, tenant: str, *, outputs_dir: Path | None = None,
                       settings: StorageSettings | None = None) -> int:
    """Remove every output of a job, on whichever backend holds them: the job's
    folder under ``outputs_dir`` (filesystem) and its prefix in the bucket (S3,
    unfinished uploads aborted too). Returns how many files/objects went."""
    settings = settings or get_storage_settings()
    removed = 0
    folder = job_output_dir(Path(outputs_dir), job_id) if outputs_dir is not None else None
    if folder is not None and folder.is_dir():
        removed += sum(1 for p in folder.rglob("*") if p.is_file())
        shutil.rmtree(folder, ignore_errors=True)
    if settings.s3_enabled and settings.s3_bucket:
        removed += _s3_for(settings).delete_prefix(settings.s3_bucket, job_prefix(settings, tenant, job_id))
    return removed
