"""Retention for outputs in object storage: when a job's record expires (the job
store's retention TTL), its outputs go too.

A sweep over the bucket, not over the job store: an expired record is gone, so
the only place that still knows a job had outputs is the bucket itself. Each pass
lists ``<prefix>/<tenant>/<job id>/`` folders (at most ``limit`` jobs) and
deletes those whose job the store no longer knows. Uploads (``uploads/``) are
left to the bucket's lifecycle rule (see the chart's ``storage.s3`` values).
"""

from __future__ import annotations

import logging
from typing import Callable

from renderfarm.core.storage import _s3_for
from renderfarm.core.storage.config import StorageSettings, get_storage_settings
from renderfarm.core.storage.keys import UPLOADS

log = logging.getLogger("renderfarm.storage")


def sweep_expired_outputs(job_exists: Callable[[str], bool], settings: StorageSettings | None = None,
                          limit: int = 2000) -> int:
    """Delete the outputs of jobs that no longer exist; returns how many objects went."""
    settings = settings or get_storage_settings()
    if not (settings.s3_enabled and settings.s3_bucket):
        return 0
    s3 = _s3_for(settings)
    root = f"{settings.s3_prefix}/" if settings.s3_prefix else ""
    removed = seen = 0
    for tenant_prefix in s3.child_prefixes(settings.s3_bucket, root):
        for folder in s3.child_prefixes(settings.s3_bucket, tenant_prefix):
            job_id = folder[len(tenant_prefix):].rstrip("/")
            if job_id == UPLOADS:
                continue
            seen += 1
            if not job_exists(job_id):
                count = s3.delete_prefix(settings.s3_bucket, folder)
                log.info("job %s expired: removed %d output objects", job_id, count)
                removed += count
            if seen >= limit:
                return removed
    return removed
