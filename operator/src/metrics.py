"""Prometheus metrics of the operator (port RF_OPERATOR_METRICS_PORT, default 9810)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

NAMESPACE = "renderfarm"


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        pool = ["namespace", "pool"]
        self.backlog = Gauge("pool_backlog", "Jobs waiting in a pool's queue (base list and priority sub-lists)",
                             pool + ["queue"], namespace=NAMESPACE, registry=self.registry)
        self.in_flight = Gauge("pool_in_flight", "Jobs taken by a pool's workers and not finished", pool,
                               namespace=NAMESPACE, registry=self.registry)
        self.desired = Gauge("pool_replicas_desired", "Replicas the operator decided", pool,
                             namespace=NAMESPACE, registry=self.registry)
        self.current = Gauge("pool_replicas_current", "Replicas the Deployment is set to", pool,
                             namespace=NAMESPACE, registry=self.registry)
        self.backlog_known = Gauge("pool_backlog_known", "1 when the pool's queues could be read", pool,
                                   namespace=NAMESPACE, registry=self.registry)
        self.decisions = Counter("scaling_decisions", "Decisions made, by reason (one per pool per tick)",
                                 pool + ["reason"], namespace=NAMESPACE, registry=self.registry)
        self.scale_changes = Counter("scaling_changes", "Replica changes applied to Deployments, by reason",
                                     pool + ["reason"], namespace=NAMESPACE, registry=self.registry)
        self.poll_seconds = Histogram("operator_poll_seconds", "Time of one tick: Redis read, decisions, patches",
                                      namespace=NAMESPACE, registry=self.registry,
                                      buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.redis_seconds = Histogram("operator_redis_read_seconds", "Time of the one pipelined Redis read per tick",
                                       namespace=NAMESPACE, registry=self.registry,
                                       buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1))
        self.redis_errors = Counter("operator_redis_errors", "Ticks whose Redis read failed",
                                    namespace=NAMESPACE, registry=self.registry)
        self.api_errors = Counter("operator_api_errors", "Kubernetes API calls that failed, by operation",
                                  ["operation"], namespace=NAMESPACE, registry=self.registry)
        self.leader = Gauge("operator_leader", "1 while this replica holds the leader Lease",
                            namespace=NAMESPACE, registry=self.registry)
        self.pools = Gauge("operator_pools", "WorkerPools served", namespace=NAMESPACE, registry=self.registry)

    def serve(self, port: int, host: str = "0.0.0.0") -> None:
        if port:
            start_http_server(port, addr=host, registry=self.registry)

    def forget_pool(self, namespace: str, pool: str) -> None:
        for gauge in (self.in_flight, self.desired, self.current, self.backlog_known):
            try:
                gauge.remove(namespace, pool)
            except KeyError:
                pass
        for labelled in (self.backlog, self.decisions, self.scale_changes):
            for labels in list(labelled._metrics):  # noqa: SLF001 - prometheus_client has no "remove matching"
                if labels[:2] == (namespace, pool):
                    labelled.remove(*labels)
