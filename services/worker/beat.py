"""``python -m renderfarm.worker.beat``: the farm's maintenance loop (one per farm).

- due retries go back on their queues (every second; workers do this too);
- jobs whose worker stopped heart-beating go back on their queues;
- waiting low-priority jobs age up one priority per ``RF_AGING_SECONDS``;
- index entries of jobs past their retention are removed;
- webhooks of finished jobs are delivered, signed, with retries, by a sender
  thread of their own (a slow receiver never holds up the passes above).
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time

from renderfarm.core.jobs import JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.maintenance import aged_priority, orphaned_jobs
from renderfarm.core.queues import PRIORITY_ORDER, WorkloadClass, queue_name
from renderfarm.core.redis_conn import redis_client
from renderfarm.core.settings import Settings, get_settings
from renderfarm.core.store import BEAT_HEARTBEAT, JobStore, TransitionConflict, inflight_key, job_key
from renderfarm.core.submit import job_message
from renderfarm.worker.webhooks import WebhookSender

log = logging.getLogger("renderfarm.beat")


def recover_orphans(store: JobStore, settings: Settings) -> list[str]:
    live = store.live_workers()
    recovered = []
    for workload in WorkloadClass:
        for priority in PRIORITY_ORDER:
            queue = queue_name(workload, priority)
            for job_id in orphaned_jobs(store.in_flight(queue), live):
                try:
                    job = store.get(job_id)
                except KeyError:
                    store.redis.hdel(inflight_key(queue), job_id)
                    continue
                seen = job.started_at.timestamp() if job.started_at else 0
                if time.time() - seen < settings.orphan_after_s:
                    continue  # just claimed; its worker's first heartbeat may be on the way
                try:
                    store.transition(job_id, JobStatus.retrying,
                                     fields={"stage": "requeued", "message": f"worker {job.worker} was lost; job requeued"},
                                     requeue_message=job_message(get_kind(job.kind), job), requeue_queue=job.queue)
                    recovered.append(job_id)
                    log.warning("job %s requeued: worker %s lost", job_id, job.worker)
                except TransitionConflict:
                    store.redis.hdel(inflight_key(queue), job_id)
    return recovered


def age_waiting_jobs(store: JobStore, settings: Settings, batch: int = 100, max_moves: int = 1000) -> int:
    """Move waiting jobs up a priority for each ``RF_AGING_SECONDS`` they waited.

    Works from each queue's oldest end in runs that share a target queue, so aged
    jobs keep their order (oldest first) in the queue they move to."""
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
                run: list[tuple[str, str]] = []
                target = None
                for raw in reversed(tail):
                    try:
                        headers = json.loads(raw)["headers"]
                        job_id, enqueued = headers["id"], float(headers.get("rf_enqueued_at") or now)
                    except (ValueError, KeyError, TypeError):
                        break
                    original = store.redis.hget(job_key(job_id), "priority") or priority.value
                    aged = aged_priority(original, priority, now - enqueued, settings.aging_seconds)
                    if aged is None or (target is not None and aged != target):
                        break
                    target = aged
                    run.append((raw, job_id))
                if not run or target is None:
                    break
                count = store.move_oldest(source, queue_name(workload, target), [raw for raw, _ in run],
                                          [job_id for _, job_id in run])
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
    while not stop.is_set():
        started = time.monotonic()
        try:
            store.redis.set(BEAT_HEARTBEAT, repr(time.time()), ex=max(5, int(settings.maintenance_interval_s * 3)))
            store.promote_due_retries()
            if started - last_slow >= 5:
                last_slow = started
                recover_orphans(store, settings)
                age_waiting_jobs(store, settings)
            if started - last_cleanup >= settings.maintenance_interval_s:
                last_cleanup = started
                removed = store.purge_expired_index_entries()
                if removed:
                    log.info("removed %d expired index entries", removed)
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
