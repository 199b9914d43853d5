"""The farm's Grafana dashboards, built with grafanalib: farm overview, per pool and
per job kind. Variables: datasource, namespace, pool, kind; no job-id panels.

Farm-wide series come from every API replica alike, so queries take ``max by`` over
the replicas before any sum. Each panel's queries are checked against a live farm
(tests/k8s/test_monitoring_live.py): a query naming a missing series fails there.
"""

from __future__ import annotations

import json

from grafanalib.core import (Dashboard, GridPos, Stat, Target, Template, Templating, Time, TimeSeries)
from grafanalib._gen import DashboardEncoder

DS = "${datasource}"
NS = 'namespace=~"$namespace"'
POOL = f'{NS}, pool=~"$pool"'
# job outcome and duration series carry the queue ("<pool>.<priority>"), not the pool
QUEUE_OF_POOL = f'{NS}, queue=~"($pool)\\\\..+"'
KIND = f'{QUEUE_OF_POOL}, kind=~"$kind"'


def _variables() -> Templating:
    def label_values(name: str, metric: str, label: str) -> Template:
        return Template(name=name, label=name, dataSource=DS, query=f"label_values({metric}, {label})",
                        includeAll=True, multi=True, allValue=".*", default="All", refresh=2, sort=1)

    return Templating(list=[
        Template(name="datasource", label="Data source", query="prometheus", type="datasource", default="Prometheus"),
        label_values("namespace", "renderfarm_queue_depth", "namespace"),
        label_values("pool", "renderfarm_queue_depth", "pool"),
        label_values("kind", "renderfarm_job_outcomes_total", "kind"),
    ])


def _series(title: str, targets: list[tuple[str, str]], unit: str = "short", stacked: bool = False,
            description: str = "") -> TimeSeries:
    return TimeSeries(
        title=title, dataSource=DS, description=description, unit=unit,
        targets=[Target(expr=expr, legendFormat=legend, refId=chr(ord("A") + i))
                 for i, (expr, legend) in enumerate(targets)],
        stacking={"mode": "normal", "group": "A"} if stacked else {"mode": "none", "group": "A"},
        fillOpacity=20 if stacked else 0,
    )


def _stat(title: str, expr: str, unit: str = "short", description: str = "") -> Stat:
    return Stat(title=title, dataSource=DS, description=description, format=unit, reduceCalc="lastNotNull",
                targets=[Target(expr=expr, refId="A", instant=True)])


def _layout(panels: list, width: int = 12, height: int = 8) -> list:
    """Two panels a row (stats four a row), in the order given."""
    placed, x, y, row_h = [], 0, 0, 0
    for panel in panels:
        w, h = (6, 4) if isinstance(panel, Stat) else (width, height)
        if x + w > 24:
            x, y = 0, y + row_h
            row_h = 0
        panel.gridPos = GridPos(h=h, w=w, x=x, y=y)
        placed.append(panel)
        x, row_h = x + w, max(row_h, h)
    return placed


def _dashboard(uid: str, title: str, description: str, panels: list) -> Dashboard:
    return Dashboard(
        uid=uid, title=title, description=description, tags=["renderfarm"], timezone="utc", refresh="30s",
        time=Time("now-6h", "now"), templating=_variables(), panels=_layout(panels),
    ).auto_panel_ids()


# Outcome series carry error_type too: each API replica's copy is one series per
# (kind, queue, status, error_type), so the max over replicas keeps all four labels.
_OUTCOME_SERIES = "kind, queue, status, error_type"


def _outcome_rate(by: str, status: str = "") -> str:
    status_sel = f', status="{status}"' if status else ""
    return (f"sum by ({by}) (max by ({_OUTCOME_SERIES}) "
            f"(rate(renderfarm_job_outcomes_total{{{KIND}{status_sel}}}[$__rate_interval])))")


def _failure_ratio(by: str) -> str:
    failed = _outcome_rate(by, "failed")
    finished = (f"sum by ({by}) (max by ({_OUTCOME_SERIES}) "
                f'(rate(renderfarm_job_outcomes_total{{{KIND}, status=~"failed|succeeded"}}[$__rate_interval])))')
    return f"{failed}\n/ {finished}"


def _duration_quantile(q: float, by: str) -> str:
    return (f"histogram_quantile({q}, sum by ({by}, le) (max by (kind, queue, le) "
            f"(rate(renderfarm_job_duration_seconds_bucket{{{KIND}}}[$__rate_interval]))))")


def _queue_wait_quantile(q: float) -> str:
    return (f"histogram_quantile({q}, sum by (queue, le) (max by (queue, le) "
            f"(rate(renderfarm_queue_wait_seconds_bucket{{{POOL}}}[$__rate_interval]))))")


def overview() -> Dashboard:
    return _dashboard("renderfarm-overview", "Renderfarm / Farm overview",
                      "Backlog, throughput, failures, waits and scaling of the whole farm.", [
        _stat("Jobs waiting", f"sum(max by (queue) (renderfarm_queue_depth{{{POOL}}}))"),
        _stat("Jobs running", f"sum(max by (queue) (renderfarm_queue_in_flight{{{POOL}}}))"),
        _stat("Dead-letter list", f"max(renderfarm_dead_letter_size{{{NS}}})"),
        _stat("Beat and Redis up", f"min(renderfarm_beat_up{{{NS}}}) * min(renderfarm_redis_up{{{NS}}})",
              description="1 when beat's heartbeat is fresh and every API replica reads Redis."),
        _series("Backlog by pool and priority",
                [(f"max by (pool, priority) (renderfarm_queue_depth{{{POOL}}})", "{{pool}} {{priority}}")],
                stacked=True, description="Messages waiting, every kombu priority sub-list counted."),
        _series("Throughput (finished jobs/s by status)", [(_outcome_rate("status"), "{{status}}")], unit="ops",
                stacked=True),
        _series("Failure rate by kind", [(_failure_ratio("kind"), "{{kind}}")], unit="percentunit"),
        _series("Oldest waiting job by queue",
                [(f"max by (queue) (renderfarm_queue_oldest_age_seconds{{{POOL}}})", "{{queue}}")], unit="s"),
        _series("Submissions by kind and priority",
                [(f'sum by (kind, priority) (rate(renderfarm_job_submissions_total{{{NS}, kind=~"$kind"}}'
                  f"[$__rate_interval]))", "{{kind}} {{priority}}")], unit="ops"),
        _series("Workers and busy slots by pool",
                [(f"max by (pool) (renderfarm_workers{{{POOL}}})", "{{pool}} workers"),
                 (f"sum by (pool) (renderfarm_worker_busy{{{POOL}}})", "{{pool}} busy")]),
        _series("Replicas desired vs current",
                [(f"max by (pool) (renderfarm_pool_replicas_desired{{{POOL}}})", "{{pool}} desired"),
                 (f"max by (pool) (renderfarm_pool_replicas_current{{{POOL}}})", "{{pool}} current")],
                description="From the operator."),
        _series("Scaling events by reason",
                [(f"sum by (pool, reason) (increase(renderfarm_scaling_changes_total{{{POOL}}}[$__rate_interval]))",
                  "{{pool}} {{reason}}")], description="Replica changes the operator applied."),
    ])


def per_pool() -> Dashboard:
    return _dashboard("renderfarm-pool", "Renderfarm / Pool",
                      "One pool (or several): queues, replicas, run times, dead-letter.", [
        _series("Queue depth by priority",
                [(f"max by (pool, priority) (renderfarm_queue_depth{{{POOL}}})", "{{pool}} {{priority}}")],
                stacked=True),
        _series("In flight by priority",
                [(f"max by (pool, priority) (renderfarm_queue_in_flight{{{POOL}}})", "{{pool}} {{priority}}")],
                stacked=True),
        _series("Paused queues", [(f"max by (queue) (renderfarm_queue_paused{{{POOL}}})", "{{queue}}")]),
        _series("Replica history",
                [(f"max by (pool) (renderfarm_pool_replicas_desired{{{POOL}}})", "{{pool}} desired"),
                 (f"max by (pool) (renderfarm_pool_replicas_current{{{POOL}}})", "{{pool}} current"),
                 (f"max by (pool) (renderfarm_workers{{{POOL}}})", "{{pool}} workers reporting")]),
        _series("Run time percentiles by kind",
                [(_duration_quantile(0.5, "kind"), "{{kind}} p50"), (_duration_quantile(0.95, "kind"), "{{kind}} p95"),
                 (_duration_quantile(0.99, "kind"), "{{kind}} p99")], unit="s"),
        _series("Outcomes by status", [(_outcome_rate("status"), "{{status}}")], unit="ops", stacked=True),
        _series("Dead-letter list and orphan recoveries (farm)",
                [(f"max(renderfarm_dead_letter_size{{{NS}}})", "dead-letter jobs"),
                 (f"max(increase(renderfarm_orphan_recoveries_total{{{NS}}}[$__rate_interval]))", "runs recovered")],
                description="Orphans: runs whose lease lapsed (worker lost), requeued or failed by beat."),
        _series("Worker concurrency and busy slots",
                [(f"sum by (pool) (renderfarm_worker_concurrency{{{POOL}}})", "{{pool}} slots"),
                 (f"sum by (pool) (renderfarm_worker_busy{{{POOL}}})", "{{pool}} busy")]),
        _series("Retries by kind and error type",
                [(f"sum by (kind, error_type) (max by (kind, pool, error_type) (rate(renderfarm_job_retries_total"
                  f'{{{POOL}, kind=~"$kind"}}[$__rate_interval])))', "{{kind}} {{error_type}}")],
                unit="ops", stacked=True,
                description="Retries scheduled (by the run, or for a lost run), by the error that caused them."),
        _series("Queue wait p50 / p95 by queue",
                [(_queue_wait_quantile(0.5), "{{queue}} p50"), (_queue_wait_quantile(0.95), "{{queue}} p95")],
                unit="s", description="Enqueue (or a retry falling due) to a worker starting the job."),
    ])


def per_kind() -> Dashboard:
    return _dashboard("renderfarm-kind", "Renderfarm / Job kind",
                      "One job kind (or several): successes, failures, durations.", [
        _series("Succeeded by kind", [(_outcome_rate("kind", "succeeded"), "{{kind}}")], unit="ops"),
        _series("Failed by kind", [(_outcome_rate("kind", "failed"), "{{kind}}")], unit="ops"),
        _series("Failure rate by kind", [(_failure_ratio("kind"), "{{kind}}")], unit="percentunit"),
        _series("Finished by kind and status", [(_outcome_rate("kind, status"), "{{kind}} {{status}}")],
                unit="ops", stacked=True),
        _series("Failures by error type", [(_outcome_rate("kind, error_type", "failed"), "{{kind}} {{error_type}}")],
                unit="ops", stacked=True, description="Failed for good, by the error type on the job."),
        _series("Duration p50 / p95 by kind",
                [(_duration_quantile(0.5, "kind"), "{{kind}} p50"), (_duration_quantile(0.95, "kind"), "{{kind}} p95")],
                unit="s"),
        _series("Mean duration by kind",
                [(f"sum by (kind) (max by (kind, queue) (rate(renderfarm_job_duration_seconds_sum{{{KIND}}}"
                  f"[$__rate_interval])))\n/ sum by (kind) (max by (kind, queue) "
                  f"(rate(renderfarm_job_duration_seconds_count{{{KIND}}}[$__rate_interval])))", "{{kind}}")],
                unit="s"),
    ])


DASHBOARDS = {"renderfarm-overview": overview, "renderfarm-pool": per_pool, "renderfarm-kind": per_kind}


def render(dashboard: Dashboard) -> str:
    return json.dumps(dashboard.to_json_data(), cls=DashboardEncoder, sort_keys=True, indent=2) + "\n"


def panel_queries(data: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query in a rendered dashboard's JSON."""
    out = []
    for panel in data.get("panels", []):
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out
