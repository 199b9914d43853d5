"""Retention for outputs in object storage: when a job's record expires (the job
store's retention TTL), its outputs go too.

A sweep over the bucket, not over the job store: an expired record is gone, so
the only place that still knows a job had outputs is the bucket itself. Each
pass looks at up to ``per_pass`` ``<prefix>/<tenant>/<job id>/`` folders,
resuming where the last pass stopped (so a bucket of any size is covered in
turn), and deletes those whose job the store no longer knows. Uploads
(``uploads/``) are left to the bucket's lifecycle rule (see the README).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterator

from renderfarm.core.storage import _s3_for
from renderfarm.core.storage.config import StorageSettings, get_storage_settings
from renderfarm.core.storage.keys import UPLOADS

log = logging.getLogger("renderfarm.storage")


class OutputSweeper:
    def __init__(self, job_exists: Callable[[str], bool], settings: StorageSettings | None = None,
                 per_pass: int = 500):
        self.job_exists = job_exists
        self.settings = settings or get_storage_settings()
        self.per_pass = per_pass
        self._folders: Iterator[tuple[str, str]] | None = None

    def _walk(self) -> Iterator[tuple[str, str]]:
        """(job id, folder) for every job folder under the prefix, tenant by tenant."""
        s3, bucket = _s3_for(self.settings), self.settings.s3_bucket
        root = f"{self.settings.s3_prefix}/" if self.settings.s3_prefix else ""
        for tenant_prefix in s3.child_prefixes(bucket, root):
            for folder in s3.child_prefixes(bucket, tenant_prefix):
                job_id = folder[len(tenant_prefix):].rstrip("/")
                if job_id != UPLOADS:
                    yield job_id, folder

    def run_pass(self) -> int:
        """Delete the outputs of jobs that no longer exist; returns how many objects went."""
        if not (self.settings.s3_enabled and self.settings.s3_bucket):
            return 0
        removed = 0
        for _ in range(self.per_pass):
            if self._folders is None:
                self._folders = self._walk()
            try:
                job_id, folder = next(self._folders)
            except StopIteration:
                self._folders = None  # the next pass starts over
                break
            except Exception:
                self._folders = None  # a failed listing: start over next time
                raise
            if not self.job_exists(job_id):
                count = _s3_for(self.settings).delete_prefix(self.settings.s3_bucket, folder)
                log.info("job %s expired: removed %d output objects", job_id, count)
                removed += count
        return removed


def sweep_expired_outputs(job_exists: Callable[[str], bool], settings: StorageSettings | None = None) -> int:
    """One full sweep (tests, scripts); beat keeps an OutputSweeper and runs a pass at a time."""
    sweeper = OutputSweeper(job_exists, settings, per_pass=10**9)
    return sweeper.run_pass()
