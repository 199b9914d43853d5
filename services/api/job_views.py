"""Jobs as the API shows them: the stored record plus its duration estimates."""

from __future__ import annotations

from typing import Sequence

from renderfarm.api.schemas import JobOut
from renderfarm.core import estimates
from renderfarm.core.jobs import Job
from renderfarm.core.store import JobStore


# One per API process: pools' queue lengths and live workers, read at most once a second.
_SNAPSHOTS = estimates.PoolSnapshots(max_age_s=1.0)


def _shown(jobs: Sequence[Job], found: Sequence[estimates.JobEstimate]) -> list[JobOut]:
    return [JobOut.model_validate(job.model_dump() | {
        "estimated_duration_s": estimate.estimated_duration_s,
        "estimated_start_s": estimate.estimated_start_s,
        "duration_s": estimate.duration_s,
    }) for job, estimate in zip(jobs, found)]


def with_estimates(store: JobStore, jobs: Sequence[Job]) -> list[JobOut]:
    return _shown(jobs, estimates.for_jobs(store, jobs, snapshots=_SNAPSHOTS))


async def with_estimates_async(async_client, store: JobStore, job: Job) -> JobOut:
    return _shown([job], await estimates.for_jobs_async(async_client, store, [job], _SNAPSHOTS))[0]
