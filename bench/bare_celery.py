"""A bare Celery app: the baseline renderfarm's dispatch overhead is measured against.

Same broker (the bench's redis-server), same serializer (JSON), same delivery
guarantees (acks_late, prefetch 1) and the same prefork concurrency as a
renderfarm CPU worker, but no job store: a task does its work and INCRs a Redis
counter, which is how the bench sees it finish.

- ``bench.noop``: nothing at all (the pure dispatch rate, for context);
- ``bench.probe(path)``: exactly what a renderfarm ``probe`` job computes
  (``ffmpeg_exec.probe`` + ``media_summary``, the same ffprobe argv), so
  "renderfarm probe jobs/s ÷ bare probe tasks/s" compares like with like.

The worker is started by bench/run.py:

    python -m celery -A bench.bare_celery worker -Q bench.bare --pool prefork --concurrency N ...

with ``BENCH_REDIS_URL`` and ``BENCH_COUNTER`` in its environment.
"""

from __future__ import annotations

import os

import redis
from celery import Celery
from kombu import Exchange, Queue

from renderfarm.worker.ffmpeg_exec import probe as ffprobe
from renderfarm.worker.workloads.cpu import media_summary

QUEUE = "bench.bare"
DEFAULT_COUNTER = "bench:done"

BROKER_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
COUNTER = os.environ.get("BENCH_COUNTER", DEFAULT_COUNTER)

app = Celery("bench_bare", broker=BROKER_URL, set_as_current=False)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    event_serializer="json",
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    task_queues=[Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)],
    task_default_queue=QUEUE,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    task_send_sent_event=False,
)

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    # One connection per pool process, made lazily (after the fork).
    global _client
    if _client is None:
        _client = redis.Redis.from_url(BROKER_URL)
    return _client


@app.task(name="bench.noop", acks_late=True, ignore_result=True)
def noop() -> None:
    _redis().incr(COUNTER)


@app.task(name="bench.probe", acks_late=True, ignore_result=True)
def probe(path: str) -> dict:
    # The same calls as renderfarm.worker.workloads.cpu.probe_media, minus the job store.
    summary = media_summary(ffprobe(path))
    _redis().incr(COUNTER)
    return summary


def enqueue(task_name: str, count: int, args: list | None = None) -> None:
    """Publish ``count`` messages with apply_async (one connection, reused)."""
    task = app.tasks[task_name]
    with app.producer_or_acquire() as producer:
        for _ in range(count):
            task.apply_async(args=args or [], queue=QUEUE, producer=producer)
