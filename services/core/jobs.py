"""The job model and its status machine (pure)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from renderfarm.core.queues import Priority


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})
ACTIVE_STATUSES = frozenset({JobStatus.queued, JobStatus.running, JobStatus.retrying})

# The only allowed moves. "retrying" sits between attempts (a transient error, or
# the job handed back by a worker that shut down); a user's retry re-queues a job
# that ended failed or cancelled.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.cancelled}),
    JobStatus.running: frozenset(
        {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.retrying}
    ),
    JobStatus.retrying: frozenset({JobStatus.running, JobStatus.cancelled}),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset({JobStatus.queued}),
    JobStatus.cancelled: frozenset({JobStatus.queued}),
}


class InvalidTransition(ValueError):
    def __init__(self, current: JobStatus, target: JobStatus):
        super().__init__(f"job cannot move from {current.value} to {target.value}")
        self.current = current
        self.target = target


def can_transition(current: JobStatus | str, target: JobStatus | str) -> bool:
    return JobStatus(target) in TRANSITIONS[JobStatus(current)]


def transition(current: JobStatus | str, target: JobStatus | str) -> JobStatus:
    """Return the new status, or raise InvalidTransition."""
    current, target = JobStatus(current), JobStatus(target)
    if target not in TRANSITIONS[current]:
        raise InvalidTransition(current, target)
    return target


def allowed_sources(target: JobStatus | str) -> frozenset[JobStatus]:
    """Statuses from which ``target`` may be reached (what the store checks atomically)."""
    target = JobStatus(target)
    return frozenset(source for source, targets in TRANSITIONS.items() if target in targets)


class ErrorType(StrEnum):
    invalid_media = "invalid_media"
    invalid_input = "invalid_input"
    timeout = "timeout"
    worker_lost = "worker_lost"  # the run's process died or stopped renewing its lease
    transient = "transient"
    out_of_memory = "out_of_memory"
    cancelled = "cancelled"
    internal = "internal"
    storage = "storage"  # the output store refused (credentials, bucket, policy): fix the settings


class JobError(BaseModel):
    type: str
    message: str
    retryable: bool = False


class OutputRef(BaseModel):
    name: str
    uri: str
    media_type: str | None = None
    size_bytes: int | None = None
    # Object storage outputs: "sha256:<hex>" of the bytes, and (in API answers only,
    # signed per read, never stored) a presigned GET URL and when it expires.
    checksum: str | None = None
    url: str | None = None
    expires_at: datetime | None = None


class JobResult(BaseModel):
    outputs: list[OutputRef] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ReviewAction(BaseModel):
    """One manual-review action on a job: who (API key id and tenant), when, what."""

    action: str  # "requeue" or "dismiss"
    by: str  # the acting API key's id (a digest prefix, never the key)
    tenant: str  # the acting key's tenant (an admin may act across tenants)
    at: datetime
    changes: dict[str, Any] = Field(default_factory=dict)  # requeue: the params/priority it changed


class Job(BaseModel):
    id: str
    kind: str
    input: str
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = Priority.normal
    queue: str
    status: JobStatus = JobStatus.queued
    progress: float = 0.0
    stage: str = ""
    message: str = ""
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: JobResult | None = None
    error: JobError | None = None
    idempotency_key: str | None = None
    webhook_url: str | None = None
    webhook_delivery: str | None = None  # "delivered" or why it was given up
    labels: dict[str, str] = Field(default_factory=dict)
    tenant: str = "default"
    worker: str | None = None
    review_log: list[ReviewAction] = Field(default_factory=list)  # manual-review actions, oldest first


class ProgressEvent(BaseModel):
    """What workers publish while a job runs, and what the SSE stream sends."""

    job_id: str
    status: JobStatus
    progress: float
    stage: str = ""
    message: str = ""
    at: datetime
