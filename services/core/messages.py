"""Celery task messages (protocol 2, JSON, kombu Redis envelope), built without a broker.

The API writes the job record and its queue message in one Redis transaction, so a
submitted job is never stored without a message nor a message sent without a job.
To do that it builds the exact message ``Task.apply_async`` would publish.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid

_ORIGIN = f"{os.getpid()}@{socket.gethostname()}"


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
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
    headers = {
        "lang": "py",
        "task": task_name,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [time_limit_s, soft_time_limit_s],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": repr(args),
        "kwargsrepr": "{}",
        "origin": _ORIGIN,
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
        # Read by queue stats (oldest waiting age) and by priority aging.
        "rf_enqueued_at": enqueued_at,
    }
    # W3C trace context of the publish (renderfarm.core.tracing); the worker's run joins its trace.
    headers.update({k: v for k, v in (trace_headers or {}).items() if k in ("traceparent", "tracestate")})
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            # Exchange and routing key as Celery's default per-queue direct exchange:
            # kombu uses them to put a message back (worker shutdown, recovery).
            "delivery_info": {"exchange": queue, "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope)


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
