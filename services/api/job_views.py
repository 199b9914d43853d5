"""Jobs as the API shows them: the stored record plus its duration estimates."""

from __future__ import annotations

from typing import Sequence

from renderfarm.api.schemas import JobOut
from renderfarm.core import estimates
from renderfarm.core.jobs import Job
from renderfarm.core.store import JobStore


def with_estimates(store: JobStore, jobs: Sequence[Job]) -> list[JobOut]:
    found = estimates.for_jobs(store, jobs)
    return [JobOut.model_validate(job.model_dump() | {
        "estimated_duration_s": estimate.estimated_duration_s,
        "estimated_start_s": estimate.estimated_start_s,
        "duration_s": estimate.duration_s,
    }) for job, estimate in zip(jobs, found)]
