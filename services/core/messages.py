"""Celery task messages (protocol 2, JSON, kombu Redis envelope), built without a broker.

The API writes the job record and its queue message in one Redis transaction, so a
submitted job is never stored without a message nor a message sent without a job.
To do that it builds the exact message ``Task.apply_async`` would publish.
"""

from __future__ import annotations

import json
import uuid


def celery_message(
    *,
    task_name: str,
    task_id: str,
    queue: str,
    args: list,
    soft_time_limit_s: int | None = None,
    time_limit_s: int | None = None,
    enqueued_at: float | None = None,
    trace_headers: dict[str, str] | None = None,
) -> str:
    """The message, as small as Celery and kombu accept it (it is most of what a queued
    job costs in Redis): headers Celery reads with a default (shadow, eta, expires,
    retries, root_id, group, parent_id, origin, stamps...) are left out, and the body is plain
    JSON, not base64. With ``enqueued_at`` given it is a pure function of its arguments
    (the delivery tag comes from the id and the time), so the job store can rebuild the
    exact bytes from the few fields in ``message_stamp`` instead of keeping a copy."""
    # (args, kwargs, embed): the embed's callbacks, errbacks, chain and chord default to None.
    body = json.dumps([args, {}, {}], separators=(",", ":"))
    headers: dict = {
        "lang": "py",
        "task": task_name,
        "id": task_id,
        "timelimit": [time_limit_s, soft_time_limit_s],
        "ignore_result": True,
        # The worker's task events carry this as the task's args: Flower and `celery
        # events` show (and search) the job id through it.
        "argsrepr": repr(args),
        # Read by queue stats (oldest waiting age) and by priority aging.
        "rf_enqueued_at": enqueued_at,
    }
    # W3C trace context of the publish (renderfarm.core.tracing); the worker's run joins its trace.
    headers.update({k: v for k, v in (trace_headers or {}).items() if k in TRACE_HEADERS and v})
    tag = f"{task_id}.{int(enqueued_at * 1_000_000)}" if enqueued_at is not None else str(uuid.uuid4())
    envelope = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            # Exchange and routing key as Celery's default per-queue direct exchange:
            # kombu uses them to put a message back (worker shutdown, recovery).
            "delivery_info": {"exchange": queue, "routing_key": queue},
            "priority": 0,
            "delivery_tag": tag,
        },
    }
    return json.dumps(envelope, separators=(",", ":"))


TRACE_HEADERS = ("traceparent", "tracestate")

# The job-record fields that, with the job's id and kind, rebuild its queue message
# exactly (``message_stamp`` reads them from a message; the store keeps them on the job).
STAMP_QUEUE = "message_queue"
STAMP_AT = "message_at"


def message_stamp(raw: str) -> dict[str, str]:
    """What a message adds to its job's id and kind: the queue it was published to, when,
    and its trace context (only those present)."""
    envelope = json.loads(raw)
    headers = envelope["headers"]
    stamp = {STAMP_QUEUE: envelope["properties"]["delivery_info"]["routing_key"],
             STAMP_AT: repr(float(headers["rf_enqueued_at"]))}
    stamp.update({name: headers[name] for name in TRACE_HEADERS if headers.get(name)})
    return stamp


# kombu's Redis transport keeps a delivered, not yet acknowledged message in this hash
# (delivery tag -> JSON [message, exchange, routing key]) until the consumer acks it.
KOMBU_UNACKED = "unacked"
KOMBU_UNACKED_INDEX = "unacked_index"  # zset: delivery tag -> when it was delivered (epoch s)


def unacked_task_id(raw: str) -> str | None:
    """The task (= job) id of an entry of kombu's unacked hash, or None."""
    try:
        return json.loads(raw)[0]["headers"]["id"]
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def message_enqueued(raw: str) -> tuple[str, float | None] | None:
    """(task id, rf_enqueued_at) of a raw queue message, or None if it is not ours."""
    try:
        headers = json.loads(raw)["headers"]
        enqueued = headers.get("rf_enqueued_at")
        return headers["id"], float(enqueued) if enqueued is not None else None
    except (ValueError, KeyError, TypeError):
        return None


def message_task_id(raw: str) -> str | None:
    """The task (= job) id in a raw queue message, or None if it is not ours."""
    try:
        return json.loads(raw)["headers"]["id"]
    except (ValueError, KeyError, TypeError):
        return None


def job_task_message(kind, job_id: str, queue: str, enqueued_at: float,
                     trace_headers: dict[str, str] | None = None) -> str:
    """The message that runs job ``job_id`` of ``kind`` (a registry JobKind): the job id
    is also the task id and the task's one argument."""
    return celery_message(task_name=kind.task_name, task_id=job_id, queue=queue, args=[job_id],
                          soft_time_limit_s=kind.soft_time_limit_s, time_limit_s=kind.time_limit_s,
                          enqueued_at=enqueued_at, trace_headers=trace_headers)


def message_from_record(kind, record: dict[str, str]) -> str | None:
    """Rebuild, byte for byte, the message last queued for a job from its record (its
    ``id`` and the ``message_stamp`` fields); None for a record without a stamp."""
    if not record.get(STAMP_AT) or not record.get(STAMP_QUEUE):
        return None
    return job_task_message(kind, record["id"], record[STAMP_QUEUE], float(record[STAMP_AT]),
                            {name: record[name] for name in TRACE_HEADERS if record.get(name)})
