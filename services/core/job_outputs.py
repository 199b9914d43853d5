"""Deleting a job's outputs: the one function every caller goes through.

Today outputs are local files under ``<data_dir>/outputs/<job id>/`` (the worker's
``output_dir``). Removal is confined to the outputs root: a job id that would
resolve anywhere else (``..``, a symlink out) removes nothing. Object storage
backends plug in here, behind the same call.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from renderfarm.core.jobs import Job


def job_output_dir(outputs_root: Path, job_id: str) -> Path | None:
    """The job's output folder, or None when it would not sit directly under the root (pure)."""
    root = outputs_root.resolve()
    candidate = (root / job_id).resolve()
    if candidate.parent != root or not job_id or job_id in (".", ".."):
        return None
    return candidate


def delete_job_outputs(job: Job, outputs_root: Path) -> int:
    """Remove the job's outputs; returns how many files went. Missing outputs are not an error."""
    folder = job_output_dir(outputs_root, job.id)
    if folder is None or not folder.is_dir():
        return 0
    count = sum(1 for path in folder.rglob("*") if path.is_file())
    shutil.rmtree(folder)
    return count
