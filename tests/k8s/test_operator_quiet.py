"""A steady farm costs the Kubernetes API nothing per tick.

The operator runs as its least-privilege ServiceAccount against the local Kubernetes; the
API server's audit log (k8s/dev/localkube.py, AUDIT_POLICY) records every request that
ServiceAccount makes. With backlog and replicas unchanged for 30 s (15 ticks of 2 s), the
operator may renew its Lease and keep its watches open; nothing else: no GET of a
Deployment's scale per pool per tick, no pod LIST, no status PATCH, no Event.
"""

from __future__ import annotations

import json
import time

from renderfarm.core.queues import pool_queues
from tests.k8s.operator_fixtures import SERVICE_ACCOUNT, farm, poll, worker_deployment, worker_pool, workerpool_crd  # noqa: F401
from tests.support.audit import by_verb_and_resource, requests_of

POOLS = 30
WORKLOADS = ("cpu", "gpu-transcribe", "gpu-vision")
STEADY_S = 30.0


def test_steady_state_makes_no_write_and_at_most_one_request_per_pool_per_minute(farm):
    names = [f"p{i:02d}" for i in range(POOLS)]
    items = []
    for i, name in enumerate(names):
        workload = WORKLOADS[i % len(WORKLOADS)]
        items += [worker_deployment(f"w-{name}"),
                  worker_pool(name, f"w-{name}", pool_queues(workload), maxReplicas=6,
                              target={"backlogPerReplica": 1})]
    started_at = time.time()
    farm.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    farm.redis().lpush("cpu.normal", "a", "b")  # the cpu pools settle at 2 replicas, the others at 0
    farm.start_operator()
    cpu_pools = [name for i, name in enumerate(names) if WORKLOADS[i % 3] == "cpu"]

    def settled() -> bool:
        for name in names:
            status = farm.pool(name).get("status") or {}
            want = 2 if name in cpu_pools else 0
            if status.get("desiredReplicas") != want or status.get("currentReplicas") != want:
                return False
        return True

    poll(settled, 60, "every pool's status to show its settled size", interval=1)
    time.sleep(4)  # the last pods' watch events and status writes

    user = f"system:serviceaccount:{farm.namespace}:{SERVICE_ACCOUNT}"
    startup = requests_of(farm.cluster.audit_log, user, started_at, time.time())
    # The log works: it holds start-up's status writes, one per pool at least.
    assert sum(1 for r in startup if r.verb == "patch" and r.resource == "workerpools/status") >= POOLS

    window_start = time.time()
    time.sleep(STEADY_S)
    window_end = time.time()
    time.sleep(1)  # let the audit log's last lines land
    steady = requests_of(farm.cluster.audit_log, user, window_start, window_end)
    counts = by_verb_and_resource(steady)

    lease_renewals = [r for r in steady if r.resource == "leases"]
    others = [r for r in steady if r.resource != "leases" and r.verb != "watch"]
    assert not others, f"steady ticks still call the API: {counts}"
    assert all(r.verb == "update" for r in lease_renewals), counts
    # The Lease is renewed every third of its 15 s duration, not on every 2 s tick.
    assert len(lease_renewals) <= STEADY_S / 5 + 1, counts
    per_pool_per_minute = len(steady) / POOLS / (STEADY_S / 60)
    assert per_pool_per_minute <= 1.0, f"{per_pool_per_minute:.2f} requests per pool per minute: {counts}"

    # Still watching: a change reaches every cpu Deployment through the caches.
    farm.redis().lpush("cpu.high", "c", "d")
    for name in cpu_pools:
        farm.wait_replicas(f"w-{name}", lambda n: n == 4, 15, "== 4 after more backlog")
