"""The farm's Prometheus alert rules: one list, rendered into the chart's
PrometheusRule and into a plain rule file (same groups).

Series come from the API's scrape-time collector (farm-wide values read from Redis:
queue_*, job_outcomes, workers, dead_letter_size, beat_up, webhook_*, redis_up) and
from the operator (pool_*, scaling_*, operator_*). Several API replicas export the
same farm-wide values, so rules aggregate them with max/min, never sum, except in
ratios where the duplication cancels out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from renderfarm.core.queues import PRIORITY_ORDER, Priority

RUNBOOK_BASE = "https://github.com/renderfarm/renderfarm/blob/main/docs/runbooks.md"

# Oldest waiting job, per priority: above this (and not paused) for 5 minutes is an alert.
WAIT_TARGET_S: dict[Priority, int] = {
    Priority.critical: 60,
    Priority.high: 300,
    Priority.normal: 1800,
    Priority.low: 7200,
}
FAILURE_RATIO = 0.2  # failed / (failed + succeeded) of a kind over 10 minutes
WEBHOOK_FAILURE_RATIO = 0.5
RETRY_RATIO = 0.5  # retries per finished job of a kind over 15 minutes
QUEUE_WAIT_QUANTILE = 0.95  # of jobs that started, per queue, over 15 minutes, against WAIT_TARGET_S


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str

    @property
    def runbook_url(self) -> str:
        return f"{RUNBOOK_BASE}#{self.name.lower()}"

    def rule(self) -> dict:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity},
            "annotations": {"summary": self.summary, "description": self.description,
                            "runbook_url": self.runbook_url},
        }


def _oldest_wait_expr() -> str:
    per_priority = "\n  or ".join(
        f'max by (namespace, queue, pool, priority) (renderfarm_queue_oldest_age_seconds{{priority="{p.value}"}})'
        f" > {WAIT_TARGET_S[p]}"
        for p in PRIORITY_ORDER)
    return f"(\n  {per_priority}\n)\nunless on (namespace, queue) (max by (namespace, queue) (renderfarm_queue_paused) == 1)"


def _queue_wait_expr() -> str:
    # Every API replica exports the same buckets; a sum over them scales all buckets alike,
    # which leaves the quantile unchanged.
    return "\nor ".join(
        f"histogram_quantile({QUEUE_WAIT_QUANTILE}, sum by (namespace, queue, pool, priority, le) "
        f'(rate(renderfarm_queue_wait_seconds_bucket{{priority="{p.value}"}}[15m]))) > {WAIT_TARGET_S[p]}'
        for p in PRIORITY_ORDER)


ALERTS: tuple[Alert, ...] = (
    Alert(
        name="RenderfarmPoolBacklogGrowingAtCapacity",
        expr=("sum by (namespace, pool) (deriv(renderfarm_pool_backlog[10m])) > 0\n"
              "and on (namespace, pool) (\n"
              "  max by (namespace, pool) (max_over_time(renderfarm_pool_replicas_desired[10m]))\n"
              "  - max by (namespace, pool) (min_over_time(renderfarm_pool_replicas_desired[10m])) == 0\n"
              "  or sum by (namespace, pool) (increase(renderfarm_scaling_decisions_total{reason=\"CapacityLimited\"}[10m])) > 0\n"
              ")"),
        for_="15m", severity="warning",
        summary="Pool {{ $labels.pool }} falls behind: its backlog grows and it does not grow",
        description=("The backlog of {{ $labels.namespace }}/{{ $labels.pool }} has grown for 15 minutes while the "
                     "pool kept its size: it is at maxReplicas or its pods cannot be scheduled (CapacityLimited)."),
    ),
    Alert(
        name="RenderfarmOldestWaitAboveTarget",
        expr=_oldest_wait_expr(),
        for_="5m", severity="warning",
        summary="Queue {{ $labels.queue }} has a job waiting longer than its target",
        description=("The oldest job in {{ $labels.queue }} has waited longer than the target of priority "
                     "{{ $labels.priority }} for 5 minutes ("
                     + ", ".join(f"{p.value} {WAIT_TARGET_S[p]}s" for p in PRIORITY_ORDER) + ")."),
    ),
    Alert(
        name="RenderfarmFailureRateHigh",
        expr=("sum by (namespace, kind) (rate(renderfarm_job_outcomes_total{status=\"failed\"}[10m]))\n"
              "/ sum by (namespace, kind) (rate(renderfarm_job_outcomes_total{status=~\"failed|succeeded\"}[10m]))\n"
              f"> {FAILURE_RATIO}"),
        for_="5m", severity="warning",
        summary="Jobs of kind {{ $labels.kind }} fail often",
        description=(f"More than {FAILURE_RATIO:.0%} of the finished {{{{ $labels.kind }}}} jobs failed over 10 minutes, "
                     "for 5 minutes (the value is the failed fraction)."),
    ),
    Alert(
        name="RenderfarmDeadLetterGrowing",
        expr="max by (namespace) (delta(renderfarm_dead_letter_size[30m])) > 0",
        for_="0m", severity="info",
        summary="Jobs failed for good in the last 30 minutes",
        description="The dead-letter list grew in the last 30 minutes (the value is by how much); those jobs will not run again unless retried.",
    ),
    Alert(
        name="RenderfarmNoWorkersForBacklog",
        expr=("sum by (namespace, pool) (\n"
              "  max by (namespace, queue, pool) (renderfarm_queue_depth)\n"
              "  unless on (namespace, queue) (max by (namespace, queue) (renderfarm_queue_paused) == 1)\n"
              ") > 0\n"
              "unless on (namespace, pool) (max by (namespace, pool) (renderfarm_workers) > 0)"),
        for_="10m", severity="critical",
        summary="Pool {{ $labels.pool }} has waiting jobs and no worker",
        description="Jobs wait in unpaused queues of {{ $labels.pool }} (the value is how many) and no worker of the pool has reported for 10 minutes.",
    ),
    Alert(
        name="RenderfarmOperatorNotReconciling",
        expr=("sum by (namespace) (increase(renderfarm_operator_redis_read_seconds_count[5m])) == 0\n"
              "or (\n"
              "  count by (namespace) (max_over_time(renderfarm_operator_leader[1h]))\n"
              "  unless count by (namespace) (renderfarm_operator_leader)\n"
              ")"),
        for_="5m", severity="critical",
        summary="The operator has not reconciled WorkerPools for 5 minutes",
        description="No operator replica in {{ $labels.namespace }} leads and reads the queues (or the operator is gone): pools keep their size.",
    ),
    Alert(
        name="RenderfarmBacklogUnknown",
        expr="max by (namespace, pool) (renderfarm_pool_backlog_known) == 0",
        for_="2m", severity="warning",
        summary="The operator cannot read the backlog of pool {{ $labels.pool }}",
        description="Redis is unreadable from the operator; {{ $labels.namespace }}/{{ $labels.pool }} keeps its size until it can read again.",
    ),
    Alert(
        name="RenderfarmRedisUnreadable",
        expr="min by (namespace) (renderfarm_redis_up) == 0",
        for_="2m", severity="critical",
        summary="The API cannot read the job store",
        description="An API replica in {{ $labels.namespace }} could not read Redis at its scrapes for 2 minutes: submissions answer 503.",
    ),
    Alert(
        name="RenderfarmBeatDown",
        expr="max by (namespace) (renderfarm_beat_up) == 0",
        for_="2m", severity="critical",
        summary="Beat is not running",
        description="Beat's heartbeat is missing: orphaned runs are not recovered, low priorities do not age and webhooks are not sent.",
    ),
    Alert(
        name="RenderfarmWebhooksFailing",
        expr=("sum by (namespace) (rate(renderfarm_webhook_deliveries_total{result=~\"retry|given_up\"}[10m]))\n"
              "/ sum by (namespace) (rate(renderfarm_webhook_deliveries_total[10m]))\n"
              f"> {WEBHOOK_FAILURE_RATIO}"),
        for_="10m", severity="warning",
        summary="Most webhook deliveries fail",
        description=(f"More than {WEBHOOK_FAILURE_RATIO:.0%} of webhook attempts were not delivered over 10 minutes, "
                     "for 10 minutes; receivers are down or refuse the signature."),
    ),
    Alert(
        name="RenderfarmRetriesHigh",
        expr=("sum by (namespace, kind) (rate(renderfarm_job_retries_total[15m]))\n"
              "/ sum by (namespace, kind) (rate(renderfarm_job_outcomes_total{status=~\"failed|succeeded\"}[15m]))\n"
              f"> {RETRY_RATIO}"),
        for_="10m", severity="warning",
        summary="Jobs of kind {{ $labels.kind }} need many retries",
        description=(f"Over 15 minutes {{{{ $labels.kind }}}} jobs were retried more than {RETRY_RATIO} times per "
                     "finished job, for 10 minutes (or retried while none finished): transient errors, timeouts, "
                     "out-of-memory or lost workers; the per-pool dashboard shows which error type."),
    ),
    Alert(
        name="RenderfarmQueueWaitHigh",
        expr=_queue_wait_expr(),
        for_="10m", severity="warning",
        summary="Jobs of queue {{ $labels.queue }} start late",
        description=(f"The {QUEUE_WAIT_QUANTILE:.0%} quantile of the time from enqueue to start of the jobs "
                     "taken from {{ $labels.queue }} over 15 minutes has been above the target of priority "
                     "{{ $labels.priority }} for 10 minutes ("
                     + ", ".join(f"{p.value} {WAIT_TARGET_S[p]}s" for p in PRIORITY_ORDER) + ")."),
    ),
    Alert(
        name="RenderfarmPoolScaleNotApplied",
        expr=("max by (namespace, pool) (renderfarm_pool_replicas_desired)\n"
              "> max by (namespace, pool) (renderfarm_pool_replicas_current)"),
        for_="15m", severity="warning",
        summary="Pool {{ $labels.pool }} is not set to the replicas the operator decided",
        description="{{ $labels.namespace }}/{{ $labels.pool }} has wanted more replicas than its Deployment is set to for 15 minutes (patches failing).",
    ),
)


def rule_groups(for_override: dict[str, str] | None = None) -> dict:
    """The rule file (``groups:``); ``for_override`` shortens ``for`` by alert name (live tests)."""
    alerts = [replace(a, for_=(for_override or {}).get(a.name, a.for_)) for a in ALERTS]
    return {"groups": [{"name": "renderfarm", "rules": [a.rule() for a in alerts]}]}
