"""``python -m renderfarm.worker.beat``: the farm's maintenance loop (one per farm).

- due retries go back on their queues (every second; workers do this too);
- running jobs whose run stopped renewing its lease go back on their queues
  (or fail, their attempts spent);
- waiting jobs whose message was lost (a Redis restart at the wrong moment) get it back;
- waiting low-priority jobs age up one priority per ``RF_AGING_SECONDS``;
- index entries of jobs past their retention are removed, at most EXPIRY_BATCH jobs' worth
  per tick (the expiry index holds them by due time);
- workflows move on past step jobs that ended without their worker advancing them
  (the worker was killed as the step finished);
- webhooks of finished jobs are delivered, signed, with retries, by a sender
  thread of their own (a slow receiver never holds up the passes above).
"""

from __future__ import annotations

import logging
import signal
import threading
import time

from renderfarm.core.jobs import ErrorType, JobStatus
from renderfarm.core.maintenance import aged_priority
from renderfarm.core.metrics_store import record_orphan_recovery
from renderfarm.core.messages import message_enqueued
from renderfarm.core.queues import PRIORITY_ORDER, WorkloadClass, all_queues, queue_name
from renderfarm.core.redis_conn import redis_client
from renderfarm.core.settings import Settings, get_settings
from renderfarm.core.recovery import end_lost_run
from renderfarm.core.storage.retention import OutputSweeper
from renderfarm.core.store import BEAT_HEARTBEAT, JobStore, job_key
from renderfarm.core.workflow_store import WorkflowStore
from renderfarm.worker.webhooks import WebhookSender

log = logging.getLogger("renderfarm.beat")

# Expired jobs cleaned per tick: the pass holds Redis for one bounded transaction,
# whatever the number of jobs kept (see renderfarm.core.expiry).
EXPIRY_BATCH = 500
# The lost-message check compares counts on most passes and reads every waiting job
# and message only this often (or when the counts show a message missing).
FULL_LOST_CHECK_S = 600.0


def recover_orphans(store: JobStore, settings: Settings) -> list[str]:
    """Requeue (or, with the attempt budget spent, fail) running jobs whose run stopped
    renewing its lease. The lease belongs to the run, not to the worker: a worker that
    restarted under the same name, or that is still draining after SIGTERM, changes
    nothing here. Each move names the lost attempt and re-checks the lease, so a run
    that renewed meanwhile keeps its job; the move publishes its event."""
    del settings  # the lease length is the run's setting (RF_ORPHAN_AFTER_S)
    now = time.time()
    recovered = []
    for job_id in store.lapsed_leases(now):
        try:
            state = store.run_state(job_id)
        except KeyError:
            continue
        if state.job.status != JobStatus.running:
            continue
        updated = end_lost_run(store, state, ErrorType.worker_lost,
                               f"the run on {state.job.worker} stopped renewing its lease", lapsed_before=now)
        if updated is not None:
            recovered.append(job_id)
            record_orphan_recovery(store.redis)
    return recovered


def requeue_lost_messages(store: JobStore, suspects: set[str], delivery_grace_s: float = 30.0,
                          full: bool = True) -> tuple[list[str], set[str]]:
    """Queued or retrying jobs whose message is nowhere: not in a queue, not delayed, not
    being delivered. It happens when Redis restarts at the wrong moment: a pool process
    dies while Redis is down and Celery cannot put its message back, or a message was
    popped but not yet recorded as delivered. Nothing else would ever run such a job.

    A job must be found missing on two passes in a row (``suspects`` carries the first),
    so a message moving between lists during one look is not mistaken for a lost one
    (and a duplicate would be harmless anyway: the claim runs a job once). Returns the
    jobs requeued and the suspects for the next pass.

    Reading every waiting job and every message grows with the queues, so unless
    ``full`` (or suspects are pending) the pass first compares counts, a few commands,
    and looks no further when the messages cover the waiting jobs."""
    if not full and not suspects and store.messages_cover_waiting(all_queues(), delivery_grace_s):
        return [], set()
    waiting = store.waiting_job_ids()
    if not waiting:
        return [], set()
    present = store.job_ids_with_a_message(all_queues(), delivery_grace_s)
    missing = set(waiting) - present
    requeued = []
    for job_id in sorted(missing & suspects):
        if store.requeue_lost_message(job_id):
            requeued.append(job_id)
            log.warning("job %s was waiting without a message; message requeued", job_id)
    return requeued, missing - set(requeued)


def age_waiting_jobs(store: JobStore, settings: Settings, batch: int = 100, max_moves: int = 1000) -> int:
    """Move waiting jobs up a priority for each ``RF_AGING_SECONDS`` they waited.

    Works from each queue's oldest end in runs that share a target queue. The move
    places each job by the time it was queued (see store._MOVE_TAIL), so jobs aged in
    different passes keep their order (oldest first), and never into a paused queue."""
    moved = 0
    now = time.time()
    paused = store.paused_queues()
    for workload in WorkloadClass:
        for priority in PRIORITY_ORDER[1:]:
            source = queue_name(workload, priority)
            if source in paused:
                continue  # a pause holds its jobs; aging must not carry them around it
            while moved < max_moves:
                tail = store.redis.lrange(source, -batch, -1)  # newest .. oldest
                run: list[tuple[str, str, float]] = []
                target = None
                for raw in reversed(tail):
                    parsed = message_enqueued(raw)
                    if parsed is None:
                        break
                    job_id, enqueued = parsed[0], parsed[1] or now
                    original = store.redis.hget(job_key(job_id), "priority") or priority.value
                    aged = aged_priority(original, priority, now - enqueued, settings.aging_seconds)
                    if aged is None or (target is not None and aged != target):
                        break
                    if queue_name(workload, aged) in paused:
                        break  # nor into a paused queue: the job waits where it is, still consumed
                    target = aged
                    run.append((raw, job_id, enqueued))
                if not run or target is None:
                    break
                count = store.move_oldest(source, queue_name(workload, target), [raw for raw, _, _ in run],
                                          [job_id for _, job_id, _ in run], [at for _, _, at in run])
                if not count:
                    break  # the queue changed under us; the next pass tries again
                moved += count
    return moved


def run_forever(stop: threading.Event, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    store = JobStore(redis_client(settings, socket_timeout_s=5), retention_seconds=settings.retention_seconds)
    sender = WebhookSender(JobStore(redis_client(settings, socket_timeout_s=5)), settings).start()
    try:
        _maintain(stop, store, settings)
    finally:
        sender.stop()


def _maintain(stop: threading.Event, store: JobStore, settings: Settings) -> None:
    last_cleanup = 0.0
    last_slow = 0.0
    last_lost_check = 0.0
    last_full_lost_check = time.monotonic()  # the first checks count; a full one every FULL_LOST_CHECK_S
    suspects: set[str] = set()
    workflows = WorkflowStore(store)
    # Outputs in object storage of jobs whose record expired (a no-op on the filesystem backend).
    outputs_sweeper = OutputSweeper(lambda job_id: store.status_of(job_id) is not None)
    while not stop.is_set():
        started = time.monotonic()
        try:
            store.redis.set(BEAT_HEARTBEAT, repr(time.time()), ex=max(5, int(settings.maintenance_interval_s * 3)))
            store.promote_due_retries()
            # Workflow steps whose job ended over a second ago and whose worker did not advance them.
            workflows.advance_due(time.time() - 1.0)
            if started - last_slow >= 5:
                last_slow = started
                recover_orphans(store, settings)
                age_waiting_jobs(store, settings)
            if started - last_lost_check >= max(settings.orphan_after_s, 5):
                last_lost_check = started
                full = started - last_full_lost_check >= FULL_LOST_CHECK_S
                last_full_lost_check = started if full else last_full_lost_check
                _, suspects = requeue_lost_messages(store, suspects, delivery_grace_s=max(10.0, 2 * settings.orphan_after_s),
                                                    full=full)
            if started - last_cleanup >= settings.maintenance_interval_s:
                last_cleanup = started
                handled, removed = store.expire_due(EXPIRY_BATCH)
                if removed:
                    log.info("removed %d expired index entries", removed)
                outputs_sweeper.run_pass()
                if handled >= EXPIRY_BATCH:
                    last_cleanup = 0.0  # a backlog: the next tick takes the next batch
        except Exception as exc:  # Redis restarting: keep going
            log.warning("maintenance pass failed: %s", exc)
        stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))


def main() -> None:
    logging.basicConfig(level=get_settings().log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("maintenance loop started")
    run_forever(stop)
    log.info("maintenance loop stopped")


if __name__ == "__main__":
    main()
