"""Prometheus metrics of the API: its own counters, plus farm-wide values read from
Redis at scrape time (queue depth, in-flight, oldest wait, outcomes, durations)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from renderfarm.core.kinds import KINDS
from renderfarm.core.metrics_store import (ORPHAN_RECOVERIES, OUTCOME_STATUSES, OUTCOMES, WEBHOOK_DELIVERIES,
                                           WEBHOOK_RESULTS, cumulative_buckets, duration_key)
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
            dead_letter, beat_up, webhooks_due, webhook_results, orphans = pipe.execute()
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

        outcome_family = CounterMetricFamily(f"{NAMESPACE}_job_outcomes", "Finished jobs by kind, queue and status",
                                             labels=["kind", "queue", "status"])
        pairs = set()
        for (kind, queue, status), count in sorted(outcome_counts(outcomes).items()):
            outcome_family.add_metric([kind, queue, status], count)
            if count:
                pairs.add((kind, queue))
        yield outcome_family

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


def outcome_counts(raw: dict[str, str]) -> dict[tuple[str, str, str], float]:
    """Pure: Redis outcome fields -> counts, with every registered kind, queue of its
    pool and final status present from the start (0): bounded by the registry, and a
    rate over a kind's first failure is not lost to a series that appears at 1."""
    counts = {(kind.name, queue, status): 0.0
              for kind in KINDS.values() for queue in pool_queues(kind.workload) for status in OUTCOME_STATUSES}
    for field, count in raw.items():
        kind, queue, status = field.split("|")
        counts[(kind, queue, status)] = float(count)
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
