"""Job outcome counters and duration histograms kept in Redis.

Workers come and go (scale-in, crashes), so their counts live in Redis, written in
the same pipeline that finishes a job; the API exports them at scrape time.
"""

from __future__ import annotations

import redis

OUTCOMES = "rf:metrics:outcomes"
WEBHOOK_DELIVERIES = "rf:metrics:webhooks"  # hash: result -> count
WEBHOOK_RESULTS: tuple[str, ...] = ("delivered", "retry", "given_up")
ORPHAN_RECOVERIES = "rf:metrics:orphan_recoveries"  # counter: runs beat found with a lapsed lease
# Statuses the outcome counter is exported with from the start (at 0), so a rate over
# the first failure of a kind is not lost to a series that appears already at 1.
OUTCOME_STATUSES: tuple[str, ...] = ("succeeded", "failed", "cancelled")
DURATION_BUCKETS_S: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200)


def duration_key(kind: str, queue: str) -> str:
    return f"rf:metrics:duration:{kind}:{queue}"


def bucket_for(seconds: float) -> str:
    """The smallest bucket bound holding ``seconds`` ("+Inf" beyond the last)."""
    for bound in DURATION_BUCKETS_S:
        if seconds <= bound:
            return repr(float(bound))
    return "+Inf"


def record_outcome(pipe: redis.client.Pipeline, kind: str, queue: str, status: str, duration_s: float | None) -> None:
    pipe.hincrby(OUTCOMES, f"{kind}|{queue}|{status}", 1)
    if duration_s is not None:
        key = duration_key(kind, queue)
        pipe.hincrby(key, bucket_for(duration_s), 1)
        pipe.hincrbyfloat(key, "sum", duration_s)
        pipe.hincrby(key, "count", 1)


def record_webhook(client: redis.Redis, result: str) -> None:
    """Count one webhook delivery attempt by result (one of WEBHOOK_RESULTS)."""
    client.hincrby(WEBHOOK_DELIVERIES, result, 1)


def record_orphan_recovery(client: redis.Redis) -> None:
    client.incr(ORPHAN_RECOVERIES)


def cumulative_buckets(raw: dict[str, str]) -> list[tuple[str, float]]:
    """Redis per-bucket counts -> Prometheus cumulative (le, count) pairs."""
    total = 0.0
    out = []
    for bound in DURATION_BUCKETS_S:
        total += float(raw.get(repr(float(bound)), 0))
        out.append((repr(float(bound)), total))
    total += float(raw.get("+Inf", 0))
    out.append(("+Inf", total))
    return out
