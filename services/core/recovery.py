"""Ending a run that is gone: its process was killed, hit the hard time limit, or
stopped renewing its lease. The job is retried within its attempt budget, or fails
for good with a clear error type (``worker_lost``, ``timeout``).

Shared by the worker's main process (which sees its pool processes die), the claim
(which finds a lapsed lease with the budget spent) and beat (lapsed leases). Every
write names the lost run's attempt token, so a run that was replaced meanwhile, or
whose lease was renewed after all, is left alone.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

from renderfarm.core import metrics_store
from renderfarm.core.jobs import ErrorType, Job, JobError, JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.retry import should_retry
from renderfarm.core.store import JobStore, LeaseAlive, RunState, StaleAttempt, TransitionConflict
from renderfarm.core.submit import job_message

log = logging.getLogger("renderfarm.recovery")


def end_lost_run(store: JobStore, state: RunState, error_type: ErrorType, message: str, *,
                 requeue_after_s: float | None = None, lapsed_before: float | None = None) -> Job | None:
    """Retry (the message queued now, or after ``requeue_after_s`` through the delayed
    set) or fail the lost run's job. Returns the new record, or None when the run was
    not the live attempt any more (or, with ``lapsed_before``, its lease lives)."""
    job = state.job
    kind = get_kind(job.kind)
    try:
        if should_retry(kind.retry, error_type, state.retries_done):
            updated = store.transition(
                job.id, JobStatus.retrying, token=state.token or None, lapsed_before=lapsed_before,
                # In the lost run's trace (as its child: whoever recovers it need not trace at all).
                requeue_message=job_message(kind, job, trace_headers={"traceparent": state.run_span}
                                            if state.run_span else None),
                due_at=None if requeue_after_s is None else time.time() + requeue_after_s,
                fields={"error": JobError(type=error_type, message=message, retryable=True),
                        "stage": "requeued", "message": message})
            pipe = store.redis.pipeline(transaction=False)
            metrics_store.record_retry(pipe, job.kind, error_type)
            pipe.execute()
        else:
            updated = store.transition(
                job.id, JobStatus.failed, token=state.token or None, lapsed_before=lapsed_before, dead_letter=True,
                fields={"error": JobError(type=error_type, message=message, retryable=False),
                        "stage": "failed", "message": message, "finished_at": datetime.now(timezone.utc)})
            pipe = store.redis.pipeline(transaction=False)
            metrics_store.record_outcome(pipe, job.kind, job.queue, JobStatus.failed.value, None, error_type)
            pipe.execute()
    except (StaleAttempt, LeaseAlive, TransitionConflict):
        return None
    log.warning("job %s: %s; now %s (attempt %d)", job.id, message, updated.status.value, job.attempts)
    return updated
