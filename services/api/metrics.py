"""Prometheus metrics of the API: its own counters, plus farm-wide values read from
Redis at scrape time (queue depth, in-flight, oldest wait, outcomes, durations)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from renderfarm.core.kinds import KINDS
from renderfarm.core.metrics_store import (FAILURE_TYPES, NO_ERROR, ORPHAN_RECOVERIES, OUTCOME_STATUSES, OUTCOMES,
                                           QUEUE_WAIT_BUCKETS_S, RETRIES, WEBHOOK_DELIVERIES, WEBHOOK_RESULTS,
                                           OutcomeKey, cumulative_buckets, duration_key, parse_outcomes,
                                           parse_retries, queue_wait_key)
from renderfarm.core.retry import RETRYABLE_ERROR_TYPES
from renderfarm.core.queues import all_queues, parse_queue_name, pool_queues
from renderfarm.core.review import bounded_backlog
from renderfarm.core.store import BEAT_HEARTBEAT, DEADLETTER, WEBHOOKS, JobStore

NAMESPACE = "renderfarm"


class FarmCollector:
    def __init__(self, store: JobStore):
        self.store = store

    def collect(self):
        up = GaugeMetricFamily(f"{NAMESPACE}_redis_up", "1 when the job store answered this scrape")
        try:
            stats = self.store.queue_stats(all_queues())
            outcomes = self.store.redis.hgetall(OUTCOMES)
            workers = self.store.workers()
            pipe = self.store.redis.pipeline(transaction=False)
            pipe.zcard(DEADLETTER)
            pipe.exists(BEAT_HEARTBEAT)
            pipe.zcount(WEBHOOKS, "-inf", time.time())
            pipe.hgetall(WEBHOOK_DELIVERIES)
            pipe.get(ORPHAN_RECOVERIES)
            pipe.hgetall(RETRIES)
            queue_names = all_queues()
            for queue in queue_names:
                pipe.hgetall(queue_wait_key(queue))
            dead_letter, beat_up, webhooks_due, webhook_results, orphans, retries, *waits = pipe.execute()
        except Exception:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        depth = GaugeMetricFamily(f"{NAMESPACE}_queue_depth", "Messages waiting in a queue (all its lists)", labels=["queue", "pool", "priority"])
        inflight = GaugeMetricFamily(f"{NAMESPACE}_queue_in_flight", "Jobs taken from a queue and not finished", labels=["queue", "pool", "priority"])
        paused = GaugeMetricFamily(f"{NAMESPACE}_queue_paused", "1 when the queue is paused", labels=["queue", "pool", "priority"])
        oldest = GaugeMetricFamily(f"{NAMESPACE}_queue_oldest_age_seconds", "Age of the oldest waiting message", labels=["queue", "pool", "priority"])
        for stat in stats:
            pool, priority = parse_queue_name(stat.name)
            labels = [stat.name, pool.value, priority.value]
            depth.add_metric(labels, stat.depth)
            inflight.add_metric(labels, stat.in_flight)
            paused.add_metric(labels, 1 if stat.paused else 0)
            oldest.add_metric(labels, stat.oldest_age_s or 0.0)
        yield from (depth, inflight, paused, oldest)

        yield from _farm_gauges(dead_letter, beat_up, webhooks_due, webhook_results)
        yield review_backlog_family(self.store)
        family = CounterMetricFamily(f"{NAMESPACE}_orphan_recoveries", "Runs beat found with a lapsed lease and "
                                     "requeued or failed")
        family.add_metric([], float(orphans or 0))
        yield family

        outcome_family = CounterMetricFamily(f"{NAMESPACE}_job_outcomes",
                                             "Finished jobs by kind, queue, status and error type (failures)",
                                             labels=["kind", "queue", "status", "error_type"])
        pairs = set()
        for key, count in sorted(outcome_counts(outcomes).items()):
            outcome_family.add_metric([key.kind, key.queue, key.status, key.error_type], count)
            if count:
                pairs.add((key.kind, key.queue))
        yield outcome_family

        retry_family = CounterMetricFamily(f"{NAMESPACE}_job_retries", "Retries scheduled, by kind, its pool and "
                                           "the error type that caused them", labels=["kind", "pool", "error_type"])
        for (kind, pool, error_type), count in sorted(retry_counts(retries).items()):
            retry_family.add_metric([kind, pool, error_type], count)
        yield retry_family

        wait_family = HistogramMetricFamily(f"{NAMESPACE}_queue_wait_seconds", "Time from enqueue to a worker "
                                            "starting the job, by the queue it was taken from",
                                            labels=["queue", "pool", "priority"])
        for queue, raw in zip(queue_names, waits):
            if raw:
                pool, priority = parse_queue_name(queue)
                wait_family.add_metric([queue, pool.value, priority.value],
                                       cumulative_buckets(raw, QUEUE_WAIT_BUCKETS_S), float(raw.get("sum", 0)))
        yield wait_family

        durations = HistogramMetricFamily(f"{NAMESPACE}_job_duration_seconds", "Job run time by kind and queue",
                                          labels=["kind", "queue"])
        pipe = self.store.redis.pipeline(transaction=False)
        ordered = sorted(pairs)
        for kind, queue in ordered:
            pipe.hgetall(duration_key(kind, queue))
        for (kind, queue), raw in zip(ordered, pipe.execute()):
            if raw:
                durations.add_metric([kind, queue], cumulative_buckets(raw), float(raw.get("sum", 0)))
        yield durations

        up_workers = GaugeMetricFamily(f"{NAMESPACE}_workers", "Live workers by pool", labels=["pool"])
        per_pool: dict[str, int] = {}
        now = time.time()
        for info in workers:
            if now - float(info.get("seen_at", 0)) < 60:
                per_pool[info.get("pool", "")] = per_pool.get(info.get("pool", ""), 0) + 1
        for pool, count in sorted(per_pool.items()):
            up_workers.add_metric([pool], count)
        yield up_workers


def outcome_counts(raw: dict[str, str]) -> dict[OutcomeKey, float]:
    """Pure: Redis outcome fields -> counts, with every registered kind, queue of its
    pool, final status and (for failures) error type present from the start (0):
    bounded by the registry and the error-type enum, and a rate over a kind's first
    failure is not lost to a series that appears at 1."""
    counts = {OutcomeKey(kind.name, queue, status, error_type): 0.0
              for kind in KINDS.values() for queue in pool_queues(kind.workload) for status in OUTCOME_STATUSES
              for error_type in (FAILURE_TYPES if status == "failed" else (NO_ERROR,))}
    for key, count in parse_outcomes(raw).items():
        counts[key] = float(count)
    return counts


def retry_counts(raw: dict[str, str]) -> dict[tuple[str, str, str], float]:
    """Pure: (kind, pool, error type) -> retries, every kind's retryable error types
    present from the start (0); kinds not in the registry are dropped (bounded)."""
    counts = {(kind.name, kind.workload.value, error_type.value): 0.0
              for kind in KINDS.values() for error_type in sorted(RETRYABLE_ERROR_TYPES)}
    for (kind, error_type), count in parse_retries(raw).items():
        if kind in KINDS:
            counts[(kind, KINDS[kind].workload.value, error_type)] = float(count)
    return counts


def _farm_gauges(dead_letter: int, beat_up: int, webhooks_due: int, webhook_results: dict[str, str]):
    family = GaugeMetricFamily(f"{NAMESPACE}_dead_letter_size", "Jobs in the dead-letter list (failed for good)")
    family.add_metric([], float(dead_letter))
    yield family
    family = GaugeMetricFamily(f"{NAMESPACE}_beat_up", "1 while beat's heartbeat is fresh in Redis")
    family.add_metric([], 1.0 if beat_up else 0.0)
    yield family
    family = GaugeMetricFamily(f"{NAMESPACE}_webhooks_due", "Webhook deliveries whose (next) attempt is due now")
    family.add_metric([], float(webhooks_due))
    yield family
    family = CounterMetricFamily(f"{NAMESPACE}_webhook_deliveries", "Webhook delivery attempts by result",
                                 labels=["result"])
    for result in WEBHOOK_RESULTS:
        family.add_metric([result], float(webhook_results.get(result, 0)))
    yield family


class ApiMetrics:
    def __init__(self, store: JobStore):
        self.registry = CollectorRegistry()
        self.submissions = Counter(f"{NAMESPACE}_job_submissions_total", "Jobs submitted",
                                   ["kind", "priority"], registry=self.registry)
        self.requests = Histogram(f"{NAMESPACE}_api_request_duration_seconds", "API request latency",
                                  ["method", "route", "status"], registry=self.registry,
                                  buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.registry.register(FarmCollector(store))

    def submitted(self, kind: str, priority: str) -> None:
        self.submissions.labels(kind, priority).inc()


def review_backlog_family(store: JobStore) -> GaugeMetricFamily:
    """Jobs waiting in manual review by kind and error type (labels bounded by the registry)."""
    family = GaugeMetricFamily(f"{NAMESPACE}_review_backlog", "Jobs failed for good and waiting in manual review",
                               labels=["kind", "error_type"])
    for (kind, error_type), count in sorted(bounded_backlog(store.review_backlog()).items()):
        family.add_metric([kind, error_type], count)
    return family
