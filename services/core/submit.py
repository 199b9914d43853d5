"""Turning a validated request into a job record and its queue message (pure)."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from renderfarm.core.jobs import Job, JobStatus
from renderfarm.core.kinds import JobKind
from renderfarm.core.messages import job_task_message
from renderfarm.core.queues import Priority, queue_name
from renderfarm.core.store import new_job_id


def new_job(
    kind: JobKind,
    *,
    input: str,
    params: dict[str, Any],
    priority: Priority,
    idempotency_key: str | None = None,
    webhook_url: str | None = None,
    labels: dict[str, str] | None = None,
    tenant: str = "default",
) -> Job:
    return Job(
        id=new_job_id(),
        kind=kind.name,
        input=input,
        params=params,
        priority=priority,
        queue=queue_name(kind.workload, priority),
        status=JobStatus.queued,
        created_at=datetime.now(timezone.utc),
        idempotency_key=idempotency_key,
        webhook_url=webhook_url,
        labels=labels or {},
        tenant=tenant,
    )


def job_message(kind: JobKind, job: Job, *, queue: str | None = None,
                trace_headers: dict[str, str] | None = None) -> str:
    """The Celery message that runs ``job`` (the job id is also the task id)."""
    return job_task_message(kind, job.id, queue or job.queue, time.time(), trace_headers)
