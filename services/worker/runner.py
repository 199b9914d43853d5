"""Running one delivered job: claim it, run its workload, record the outcome.

The decisions (may this job run, is this failure retried, after how long) are the
pure functions in renderfarm.core; this module is the shell around them.
"""

from __future__ import annotations

import logging
import random
import shutil
import tempfile
import time
from datetime import datetime, timezone
from functools import lru_cache

from celery.exceptions import Reject, SoftTimeLimitExceeded

from renderfarm.core import metrics_store
from renderfarm.core.jobs import ErrorType, JobError, JobResult, JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.redis_conn import redis_client
from renderfarm.core.retry import retry_delay, should_retry
from renderfarm.core.settings import get_settings
from renderfarm.core.store import JobStore, TransitionConflict, job_key
from renderfarm.core.submit import job_message
from renderfarm.worker import identity
from renderfarm.worker.context import JobContext
from renderfarm.worker.errors import JobCancelled, WorkloadError
from renderfarm.worker.fetch import local_input
from renderfarm.worker.workloads import handlers_for

log = logging.getLogger("renderfarm.worker")


@lru_cache
def job_store() -> JobStore:
    settings = get_settings()
    return JobStore(redis_client(settings, socket_timeout_s=10), retention_seconds=settings.retention_seconds)


def run_job(task, job_id: str) -> None:
    settings = get_settings()
    store = job_store()
    if store.in_paused_queue(job_id):
        # Back to the head of its queue; this worker stops consuming it shortly
        # (see bootsteps.PauseSync), so nothing spins.
        raise Reject("queue paused", requeue=True)

    worker = identity.worker_name()
    may_run, detail = store.claim(job_id, worker)
    if not may_run:
        log.info("job %s not run: %s", job_id, detail)
        return
    job = store.get(job_id)
    store.publish_status(job)
    kind = get_kind(job.kind)
    started = time.monotonic()
    work_root = settings.data_dir / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    work_dir = tempfile.mkdtemp(prefix=f"{job_id}-", dir=work_root)
    error: JobError | None = None
    try:
        params = kind.params_model.model_validate(job.params)
        handler = handlers_for(kind.workload)[kind.name]

        def report(progress: float, stage: str, message: str) -> None:
            store.record_progress(job_id, JobStatus.running, progress, stage, message)

        def is_cancelled() -> bool:
            return store.status_of(job_id) == JobStatus.cancelled

        report(0, "fetching input", "")
        from pathlib import Path

        input_path = local_input(job.input, settings, Path(work_dir))
        ctx = JobContext(
            job=job,
            params=params,
            settings=settings,
            input_path=input_path,
            work_dir=Path(work_dir),
            output_dir=settings.outputs_dir / job_id,
            report=report,
            is_cancelled=is_cancelled,
        )
        result = handler(ctx)
        if not isinstance(result, JobResult):
            result = JobResult.model_validate(result)
        _finish(store, job, JobStatus.succeeded, started, fields={
            "result": result, "progress": 100, "stage": "done", "message": "", "error": None,
        })
        return
    except JobCancelled:
        _finish_cancelled(store, job, started)
        return
    except SoftTimeLimitExceeded:
        error = JobError(type=ErrorType.timeout, message=f"{kind.name} exceeded its time limit of {kind.soft_time_limit_s} s", retryable=True)
    except WorkloadError as exc:
        error = JobError(type=exc.error_type, message=str(exc), retryable=should_retry(kind.retry, exc.error_type, 0))
    except Exception as exc:  # a bug or an unknown failure: a poison job, not retried
        log.exception("job %s failed", job_id)
        error = JobError(type=ErrorType.internal, message=f"{type(exc).__name__}: {exc}", retryable=False)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    current = store.get(job_id)
    if current.status == JobStatus.cancelled:
        _finish_cancelled(store, job, started)
        return
    retries_done = max(0, current.attempts - 1)
    if should_retry(kind.retry, error.type, retries_done):
        delay = retry_delay(kind.retry, retries_done, random.random())
        try:
            store.schedule_retry(job_id, job_message(kind, current), delay, {
                "error": error, "stage": "retrying", "message": f"retry {retries_done + 1} of {kind.retry.max_retries} in {delay:.1f} s",
            })
            store.publish_status(store.get(job_id))
        except TransitionConflict:
            pass
        return
    _finish(store, job, JobStatus.failed, started, fields={
        "error": JobError(type=error.type, message=error.message, retryable=False), "stage": "failed", "message": error.message,
    }, dead_letter=True)


def _finish(store: JobStore, job, status: JobStatus, started: float, *, fields: dict, dead_letter: bool = False) -> None:
    duration = time.monotonic() - started
    try:
        store.transition(job.id, status, fields=fields | {"finished_at": datetime.now(timezone.utc)}, dead_letter=dead_letter)
    except TransitionConflict as conflict:
        # Cancelled while finishing: the cancel wins, outputs are dropped.
        if conflict.current == JobStatus.cancelled.value:
            shutil.rmtree(get_settings().outputs_dir / job.id, ignore_errors=True)
            _record(store, job, JobStatus.cancelled, duration)
            return
        raise
    _record(store, job, status, duration)
    store.publish_status(store.get(job.id))


def _finish_cancelled(store: JobStore, job, started: float) -> None:
    shutil.rmtree(get_settings().outputs_dir / job.id, ignore_errors=True)
    store.redis.hset(job_key(job.id), mapping={"stage": "cancelled"})
    _record(store, job, JobStatus.cancelled, time.monotonic() - started)
    store.publish_status(store.get(job.id))


def _record(store: JobStore, job, status: JobStatus, duration: float) -> None:
    pipe = store.redis.pipeline(transaction=False)
    metrics_store.record_outcome(pipe, job.kind, job.queue, status.value, duration)
    pipe.execute()
