"""Job outcome, retry and queue-wait counters and run-time histograms kept in Redis.

Workers come and go (scale-in, crashes), so their counts live in Redis, written in
the same pipeline that finishes a job; the API exports them at scrape time.

This module owns the record formats: the outcome field "kind|queue|status|error_type"
(older records have no error type: they read as "none"), the retry field
"kind|error_type", and the histogram hashes. Readers (the API's exporter and
/v1/stats, the operator's completion rates) parse through ``parse_outcomes``.
Every label value is bounded: kinds and queues by the registry, error types by
``ErrorType`` (anything else counts as ``internal``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import redis

from renderfarm.core.jobs import ErrorType

OUTCOMES = "rf:metrics:outcomes"
RETRIES = "rf:metrics:retries"  # hash: "kind|error_type" -> retries scheduled
NO_ERROR = "none"  # the error_type label of outcomes that are not failures
WEBHOOK_DELIVERIES = "rf:metrics:webhooks"  # hash: result -> count
WEBHOOK_RESULTS: tuple[str, ...] = ("delivered", "retry", "given_up")
ORPHAN_RECOVERIES = "rf:metrics:orphan_recoveries"  # counter: runs beat found with a lapsed lease
# Statuses the outcome counter is exported with from the start (at 0), so a rate over
# the first failure of a kind is not lost to a series that appears already at 1.
OUTCOME_STATUSES: tuple[str, ...] = ("succeeded", "failed", "cancelled")
DURATION_BUCKETS_S: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)
# Enqueue -> start. Finer at the low end: a healthy farm starts jobs within a second.
QUEUE_WAIT_BUCKETS_S: tuple[float, ...] = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200)
# A failed outcome's error types; a cancel is its own status, never a failure's type.
FAILURE_TYPES: tuple[str, ...] = tuple(t.value for t in ErrorType if t is not ErrorType.cancelled)


def duration_key(kind: str, queue: str) -> str:
    return f"rf:metrics:duration:{kind}:{queue}"


def queue_wait_key(queue: str) -> str:
    return f"rf:metrics:queue_wait:{queue}"


def bucket_for(seconds: float, buckets: tuple[float, ...] = DURATION_BUCKETS_S) -> str:
    """The smallest bucket bound holding ``seconds`` ("+Inf" beyond the last)."""
    for bound in buckets:
        if seconds <= bound:
            return repr(float(bound))
    return "+Inf"


def error_label(error_type: str | None) -> str:
    """Pure: the bounded label value of an error type (``none`` for no error)."""
    if not error_type:
        return NO_ERROR
    return error_type if error_type in FAILURE_TYPES else ErrorType.internal.value


@dataclass(frozen=True, order=True)
class OutcomeKey:
    kind: str
    queue: str
    status: str
    error_type: str = NO_ERROR


def outcome_field(key: OutcomeKey) -> str:
    return f"{key.kind}|{key.queue}|{key.status}|{key.error_type}"


def parse_outcomes(raw: Mapping[str, object]) -> dict[OutcomeKey, int]:
    """Pure: outcome hash fields -> counts; malformed fields and counts are skipped."""
    out: dict[OutcomeKey, int] = {}
    for field, value in raw.items():
        parts = field.split("|")
        if len(parts) not in (3, 4):
            continue
        try:
            count = int(float(value))
        except (TypeError, ValueError):
            continue
        key = OutcomeKey(*parts) if len(parts) == 4 else OutcomeKey(*parts, NO_ERROR)
        out[key] = out.get(key, 0) + count
    return out


def finished_by_queue(raw: Mapping[str, object]) -> dict[str, int]:
    """Pure: finished jobs (any final status) per queue, from the outcome hash."""
    out: dict[str, int] = {}
    for key, count in parse_outcomes(raw).items():
        if key.status in OUTCOME_STATUSES:
            out[key.queue] = out.get(key.queue, 0) + count
    return out


def record_outcome(pipe: redis.client.Pipeline, kind: str, queue: str, status: str, duration_s: float | None,
                   error_type: str | None = None) -> None:
    label = error_label(error_type) if status == "failed" else NO_ERROR
    pipe.hincrby(OUTCOMES, outcome_field(OutcomeKey(kind, queue, status, label)), 1)
    if duration_s is not None:
        key = duration_key(kind, queue)
        pipe.hincrby(key, bucket_for(duration_s), 1)
        pipe.hincrbyfloat(key, "sum", duration_s)
        pipe.hincrby(key, "count", 1)


def record_retry(pipe: redis.client.Pipeline, kind: str, error_type: str | None) -> None:
    """One retry scheduled (by the run itself, or for a lost run)."""
    pipe.hincrby(RETRIES, f"{kind}|{error_label(error_type)}", 1)


def parse_retries(raw: Mapping[str, object]) -> dict[tuple[str, str], int]:
    """Pure: retry hash fields -> counts by (kind, error_type)."""
    out: dict[tuple[str, str], int] = {}
    for field, value in raw.items():
        kind, _, error_type = field.partition("|")
        try:
            out[(kind, error_type)] = out.get((kind, error_type), 0) + int(float(value))
        except (TypeError, ValueError):
            continue
    return out


def record_queue_wait(pipe: redis.client.Pipeline, queue: str, seconds: float) -> None:
    """How long a job waited in ``queue`` before a worker started it."""
    key = queue_wait_key(queue)
    pipe.hincrby(key, bucket_for(max(0.0, seconds), QUEUE_WAIT_BUCKETS_S), 1)
    pipe.hincrbyfloat(key, "sum", max(0.0, seconds))
    pipe.hincrby(key, "count", 1)


def record_webhook(client: redis.Redis, result: str) -> None:
    """Count one webhook delivery attempt by result (one of WEBHOOK_RESULTS)."""
    client.hincrby(WEBHOOK_DELIVERIES, result, 1)


def record_orphan_recovery(client: redis.Redis) -> None:
    client.incr(ORPHAN_RECOVERIES)


def cumulative_buckets(raw: dict[str, str], buckets: tuple[float, ...] = DURATION_BUCKETS_S) -> list[tuple[str, float]]:
    """Redis per-bucket counts -> Prometheus cumulative (le, count) pairs."""
    total = 0.0
    out = []
    for bound in buckets:
        total += float(raw.get(repr(float(bound)), 0))
        out.append((repr(float(bound)), total))
    total += float(raw.get("+Inf", 0))
    out.append(("+Inf", total))
    return out
