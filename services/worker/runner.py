"""Running one delivered job: claim it, run its workload, record the outcome.

The decisions (may this job run, is this failure retried, after how long) are the
pure functions in renderfarm.core; this module is the shell around them.

Exactly once: the claim hands this run an attempt token and a lease. The run's own
thread (``Lease``) renews the lease, independently of the Celery consumer (which
stops its timers at warm shutdown while the pool drains), and learns there when the
run stopped being the job's live attempt: cancelled, retried, or taken over after
its lease lapsed. Every write of the run names the token, so a stale run writes
nothing, and its cleanup only removes files it wrote itself.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
import threading
import time
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import redis
from celery.exceptions import Reject, SoftTimeLimitExceeded

from renderfarm.core import metrics_store, tracing
from renderfarm.core.jobs import ErrorType, Job, JobError, JobResult, JobStatus
from renderfarm.core.kinds import JobKind, get_kind
from renderfarm.core.recovery import end_lost_run
from renderfarm.core.redis_conn import redis_client
from renderfarm.core.retry import max_attempts, retry_delay, should_retry
from renderfarm.core.settings import Settings, get_settings
from renderfarm.core.storage import s3_storage
from renderfarm.core.store import JobStore, StaleAttempt, TransitionConflict
from renderfarm.core.submit import job_message
from renderfarm.worker import identity
from renderfarm.worker.context import JobContext
from renderfarm.worker.errors import JobCancelled, WorkloadError
from renderfarm.core.workflow_store import WorkflowStore
from renderfarm.worker.fetch import local_input
from renderfarm.worker.workloads import handlers_for
from renderfarm.core import estimates

log = logging.getLogger("renderfarm.worker")

# How often a run renews its lease and looks for a cancel: a cancel is seen well within 1 s.
LEASE_TICK_S = 0.25


@lru_cache
def job_store() -> JobStore:
    settings = get_settings()
    return JobStore(redis_client(settings, socket_timeout_s=10), retention_seconds=settings.retention_seconds)


class Lease(threading.Thread):
    """Renews a run's lease from its own thread; ``lost`` is set once the run is no
    longer the job's live attempt (the renewal says so)."""

    def __init__(self, store: JobStore, job_id: str, token: str, lease_s: float):
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.store, self.job_id, self.token, self.lease_s = store, job_id, token, lease_s
        self.lost = threading.Event()
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.wait(LEASE_TICK_S):
            try:
                if not self.store.renew_lease(self.job_id, self.token, self.lease_s):
                    self.lost.set()
                    return
            except Exception as exc:  # Redis restarting: keep trying; fencing decides if the lease lapses meanwhile
                log.warning("lease renewal for job %s failed: %s", self.job_id, exc)

    def stop(self) -> None:
        self._stop.set()


def _ledger(settings: Settings, job_id: str, token: str, event: str) -> None:
    """One line per run event for fault tests (RF_RUN_LEDGER); O_APPEND keeps lines whole."""
    if settings.run_ledger is None:
        return
    line = f"{time.time():.3f} {job_id} {token} {event}\n".encode()
    fd = os.open(settings.run_ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _through_redis_restarts(call, *args, patience_s: float = 60.0, **kwargs):
    """Repeat a store call while Redis restarts. Safe for the run's writes: each names
    the attempt token, so a repeat after a lost reply changes nothing twice."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return call(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def claim_when_free(store: JobStore, job_id: str, kind: JobKind, settings: Settings):
    """Claim, waiting out a live lease for at most one lease period: a redelivered message
    for a job whose run is gone re-claims it once the lease lapses. If the lease stays
    alive, the run is alive: this delivery is a duplicate and is dropped (should that
    run die later, its lapsed lease brings the job back through recovery)."""
    worker = identity.worker_name()
    deadline = time.monotonic() + settings.orphan_after_s + 2 * LEASE_TICK_S + 1
    while True:
        claim = _through_redis_restarts(store.claim, job_id, worker, max_attempts=max_attempts(kind.retry),
                                        lease_s=settings.orphan_after_s, span_context=tracing.current_traceparent())
        if claim.outcome == "busy" and time.monotonic() < deadline:
            time.sleep(min(0.5, settings.orphan_after_s / 4))
            continue
        if claim.outcome == "lost":
            end_lost_run(store, claim.state, ErrorType.worker_lost,
                         f"the run on {claim.state.job.worker} was lost; {claim.state.job.attempts} attempts spent",
                         lapsed_before=time.time())
        if claim.outcome != "run":
            log.info("job %s not run: %s %s", job_id, claim.outcome, claim.detail)
        return claim


def run_job(task, job_id: str, kind_name: str | None = None) -> None:
    settings = get_settings()
    store = job_store()
    if _through_redis_restarts(store.in_paused_queue, job_id):
        # Back to the head of its queue; this worker stops consuming it shortly
        # (see bootsteps.PauseSync), so nothing spins.
        raise Reject("queue paused", requeue=True)
    kind = get_kind(kind_name) if kind_name else get_kind(store.get(job_id).kind)
    claim = claim_when_free(store, job_id, kind, settings)
    if claim.outcome != "run":
        return
    token, job = claim.token, claim.state.job
    tracing.mark_attempt(job.attempts, claim.previous_span)
    wait_s = queue_wait_s(claim)
    if wait_s is not None:
        _count(store, job_id, lambda pipe: metrics_store.record_queue_wait(pipe, job.queue, wait_s))
    lease = Lease(store, job_id, token, settings.orphan_after_s)
    lease.start()
    _ledger(settings, job_id, token, "start")
    try:
        outcome = _run_attempt(store, settings, kind, job, token, claim.state.retries_done, lease)
    finally:
        lease.stop()
    _ledger(settings, job_id, token, f"end {outcome}")


def queue_wait_s(claim) -> float | None:
    """Pure: enqueue -> start of a claimed run; None for a run taken over from a lost
    one (it did not wait in a queue)."""
    job = claim.state.job
    if claim.detail not in (JobStatus.queued.value, JobStatus.retrying.value) or job.started_at is None:
        return None
    enqueued = claim.state.enqueued_at if claim.state.enqueued_at is not None else job.created_at.timestamp()
    return max(0.0, job.started_at.timestamp() - enqueued)


def _run_attempt(store: JobStore, settings: Settings, kind: JobKind, job: Job, token: str, retries_done: int,
                 lease: Lease) -> str:
    """Runs the workload and records how the attempt ended; returns that outcome
    (succeeded, retrying, failed, cancelled, stopped)."""
    job_id = job.id
    started = time.monotonic()
    work_root = settings.data_dir / "work"
    work_root.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=work_root))
    ctx: JobContext | None = None
    error: JobError | None = None
    try:
        params = kind.params_model.model_validate(job.params)
        handler = handlers_for(kind.workload)[kind.name]

        def report(progress: float, stage: str, message: str) -> None:
            try:
                if not store.record_progress(job_id, token, progress, stage, message):
                    lease.lost.set()
            except redis.RedisError as exc:  # progress is best effort; the lease thread watches liveness
                log.warning("progress of job %s not recorded: %s", job_id, exc)

        def still_live() -> bool:
            if lease.lost.is_set():
                return False
            if not _through_redis_restarts(store.is_live_attempt, job_id, token):
                lease.lost.set()
                return False
            return True

        report(0, "fetching input", "")
        input_path = local_input(job.input, settings, work_dir, tenant=job.tenant, should_stop=lease.lost.is_set)
        storage = s3_storage()
        ctx = JobContext(
            job=job,
            params=params,
            settings=settings,
            input_path=input_path,
            work_dir=work_dir,
            # With object storage, finished files wait in the scratch folder until uploaded.
            output_dir=work_dir / "outputs" if storage is not None else settings.outputs_dir / job_id,
            report=report,
            is_cancelled=lease.lost.is_set,
            _cancel_check_interval_s=0.0,  # a flag the lease thread sets: free to read
            is_live=still_live,
            token=token,
            storage=storage,
        )
        result = handler(ctx)
        if not isinstance(result, JobResult):
            result = JobResult.model_validate(result)
        _ledger(settings, job_id, token, "done")
        return _finish(store, job, token, JobStatus.succeeded, started, ctx, fields={
            "result": result, "progress": 100, "stage": "done", "message": "", "error": None,
        })
    except JobCancelled:
        return _stopped(store, job, token, started, ctx)
    except SoftTimeLimitExceeded:
        error = JobError(type=ErrorType.timeout, message=f"{kind.name} exceeded its time limit of {kind.soft_time_limit_s} s", retryable=True)
    except WorkloadError as exc:
        error = JobError(type=exc.error_type, message=str(exc), retryable=should_retry(kind.retry, exc.error_type, 0))
    except redis.RedisError as exc:  # Redis restarting under the run: worth another attempt
        error = JobError(type=ErrorType.transient, message=f"job store unavailable: {exc}", retryable=True)
    except Exception as exc:  # a bug or an unknown failure: a poison job, not retried
        log.exception("job %s failed", job_id)
        error = JobError(type=ErrorType.internal, message=f"{type(exc).__name__}: {exc}", retryable=False)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)

    if lease.lost.is_set():
        return _stopped(store, job, token, started, ctx)
    return _end_attempt(store, kind, job, token, error, retries_done, started, ctx)


def _end_attempt(store: JobStore, kind: JobKind, job: Job, token: str, error: JobError, retries_done: int,
                 started: float, ctx: JobContext | None) -> str:
    try:
        if should_retry(kind.retry, error.type, retries_done):
            delay = retry_delay(kind.retry, retries_done, random.random())
            message = job_message(kind, job, trace_headers=tracing.requeue_headers())
            _through_redis_restarts(store.schedule_retry, job.id, token, message, delay, {
                "error": error, "stage": "retrying",
                "message": f"retry {retries_done + 1} of {kind.retry.max_retries} in {delay:.1f} s",
            })
            _count(store, job.id, lambda pipe: metrics_store.record_retry(pipe, job.kind, error.type))
            return JobStatus.retrying.value
        return _finish(store, job, token, JobStatus.failed, started, ctx, fields={
            "error": JobError(type=error.type, message=error.message, retryable=False), "stage": "failed",
            "message": error.message,
        }, dead_letter=True, error_type=error.type)
    except (StaleAttempt, TransitionConflict):
        return _stopped(store, job, token, started, ctx)


def _finish(store: JobStore, job: Job, token: str, status: JobStatus, started: float, ctx: JobContext | None, *,
            fields: dict, dead_letter: bool = False, error_type: str | None = None) -> str:
    duration = time.monotonic() - started
    try:
        _through_redis_restarts(store.transition, job.id, status,
                                fields=fields | {"finished_at": datetime.now(timezone.utc)},
                                dead_letter=dead_letter, token=token)
    except (StaleAttempt, TransitionConflict):
        if _committed_by(store, job.id, token, status):
            pass  # a repeat after Redis restarted: the first call went through, only its reply was lost
        else:
            # Cancelled, retried or taken over while finishing: that wins, this run's outputs are dropped.
            return _stopped(store, job, token, started, ctx)
    _record(store, job, status, duration, error_type)
    _advance_workflow(store, job.id)
    if status == JobStatus.succeeded:
        _learn_duration(store, job, fields.get("result"), duration)
    return status.value


def _learn_duration(store: JobStore, job: Job, result: JobResult | None, duration: float) -> None:
    """Teach the duration estimates this run (best effort, like the outcome counters)."""
    try:
        estimates.learn(store.redis, job.model_copy(update={"result": result}), get_kind(job.kind).workload.value,
                        duration, media_ttl_s=get_settings().retention_seconds)
    except Exception as exc:  # the job has succeeded: nothing here may turn that into a failure
        log.warning("duration of job %s not learned: %s", job.id, exc)


def _advance_workflow(store: JobStore, job_id: str) -> None:
    """A workflow step ended: start what follows now. Beat does it too (advance_due), so
    a worker killed right here delays the workflow by a beat pass and starts nothing twice."""
    try:
        if store.workflow_of(job_id):
            WorkflowStore(store).advance(job_id)
    except Exception as exc:  # beat advances it: never fail a finished job over this
        log.warning("workflow of job %s not advanced now (beat will): %s", job_id, exc)


def _committed_by(store: JobStore, job_id: str, token: str, status: JobStatus) -> bool:
    state = _through_redis_restarts(store.run_state, job_id)
    return state.job.status == status and state.last_token == token


def _stopped(store: JobStore, job: Job, token: str, started: float, ctx: JobContext | None) -> str:
    """This run is no longer the live attempt. If it was cancelled (and no later attempt
    exists) it acknowledges and removes its outputs; either way it removes only files it
    wrote itself and nobody replaced, never another attempt's."""
    acknowledged = _through_redis_restarts(store.acknowledge_cancel, job.id, token)
    if ctx is not None:
        ctx.remove_own_files(published_too=acknowledged)
    if acknowledged:
        _record(store, job, JobStatus.cancelled, time.monotonic() - started)
        return JobStatus.cancelled.value
    log.info("job %s: run %s stopped, a later attempt owns the job", job.id, token)
    return "stopped"


def _record(store: JobStore, job, status: JobStatus, duration: float | None, error_type: str | None = None) -> None:
    _count(store, job.id, lambda pipe: metrics_store.record_outcome(pipe, job.kind, job.queue, status.value,
                                                                     duration, error_type))


def _count(store: JobStore, job_id: str, write) -> None:
    """Write counters (``write(pipe)``) in one round trip; a counter is not job state,
    so a failed write is logged, never fails the run."""
    try:
        pipe = store.redis.pipeline(transaction=False)
        write(pipe)
        pipe.execute()
    except redis.RedisError as exc:
        log.warning("metrics of job %s not counted: %s", job_id, exc)
