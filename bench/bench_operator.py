#!/usr/bin/env python
"""The WorkerPool operator: Redis round trips per poll, time per poll, reaction time.

1. redis   one poll of 50 pools x 4 queues (200 queues; each: base list, 3 kombu priority
           sub-lists, in-flight hash): round trips counted on the client's connection (a
           pipeline is one send and one read), commands counted by the server
           (INFO commandstats), read time p50/p99.                 target: 1 round trip
2. tick    the operator's whole tick for those 50 pools (Redis read, 50 decisions, status
           building) against an in-memory Kubernetes: the operator's own cost per poll.
3. reaction   on the local Kubernetes (k8s/dev/localkube.py; skipped when its tools are
           not built): the operator runs as a subprocess with its default 2 s interval;
           each trial waits a random part of a tick, pushes a backlog and times the moment
           the Deployment's replicas change (p50/p99).              target: p99 <= 5 s
           Then 50 WorkerPools and Deployments: steady-state poll time from the operator's
           own histogram, and the time for all 50 Deployments to follow one burst.
4. api      Kubernetes API requests per pool per minute at 50 and at 500 pools, in steady
           state and during a burst, counted in the API server's audit log (every request
           of the operator's ServiceAccount; k8s/dev/localkube.py).   target: steady <= 1

KEDA's Redis-lists scaler polls every 30 s by default and the HPA adds its own 15 s sync:
up to ~45 s from backlog to a scaled Deployment (given for context, not measured here).

``run(report)`` reports to bench/run.py's Report (section ``operator``) or fills a dict;
standalone: ``python bench/bench_operator.py [--quick]`` prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402

from renderfarm.core.metrics_store import OUTCOMES  # noqa: E402
from renderfarm.core.queues import redis_list_keys  # noqa: E402
from renderfarm.core.store import inflight_key  # noqa: E402
from renderfarm.operator.controller import Controller, PoolRegistry, ScalingLoop  # noqa: E402
from renderfarm.operator.kube import ScaleInfo  # noqa: E402
from renderfarm.operator.metrics import OperatorMetrics  # noqa: E402
from renderfarm.operator.queue_reader import QueueReader  # noqa: E402
from tests.support.chart import CRD_FILE, helm_template  # noqa: E402
from bench.scratch import measure_in_scratch  # noqa: E402
from tests.support.procs import PYTHON, RedisServer, ServiceProcess, free_port, rf_env, wait_for  # noqa: E402

SECTION = "operator"
POOLS = 50
PRIORITIES = ("critical", "high", "normal", "low")
TARGET_ROUND_TRIPS = 1
TARGET_REACTION_P99_S = 5.0
TARGET_REQUESTS_PER_POOL_MINUTE = 1.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


# --- 1. Redis round trips ----------------------------------------------------------------------


class CountingConnection(redis.Connection):
    """Counts sends to and reads from the server: a round trip is a send followed by reads."""

    sends = 0

    def send_packed_command(self, command, check_health=True):  # noqa: ANN001 - redis-py's signature
        CountingConnection.sends += 1
        return super().send_packed_command(command, check_health)


def synthetic_queues() -> list[str]:
    # The CRD accepts only the 12 real queue names; the reader takes any, so 200 distinct
    # queues stand in for 50 pools of 4 (the worst case: no queue shared between pools).
    return [f"bench-pool-{i:02d}.{p}" for i in range(POOLS) for p in PRIORITIES]


def fill(client: redis.Redis, queues: list[str]) -> None:
    rng = random.Random(7)
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in redis_list_keys(queue):
            n = rng.randint(0, 5)
            if n:
                pipe.lpush(key, *[f"m{i}" for i in range(n)])
        pipe.hset(inflight_key(queue), mapping={f"job-{queue}-{i}": f"cpu@pod-{queue}-{i}" for i in range(2)})
    pipe.hset(OUTCOMES, mapping={f"probe|{q}|succeeded": 10 for q in queues})
    pipe.execute()


def measure_redis(server: RedisServer, polls: int) -> dict[str, Any]:
    queues = synthetic_queues()
    pool = redis.ConnectionPool(connection_class=CountingConnection, port=server.port, decode_responses=True)
    client = redis.Redis(connection_pool=pool)
    fill(client, queues)
    admin = server.client()
    reader = QueueReader(client)
    reader.read(queues)  # connect, warm
    admin.config_resetstat()
    CountingConnection.sends = 0
    times = []
    for _ in range(polls):
        started = time.perf_counter()
        snapshot = reader.read(queues)
        times.append(time.perf_counter() - started)
        assert snapshot.ok and len(snapshot.queues) == len(queues)
    sends = CountingConnection.sends
    stats = admin.info("commandstats")
    ours = {k: v for k, v in stats.items() if not k.startswith(("cmdstat_config", "cmdstat_info"))}
    commands = sum(v["calls"] for v in ours.values())
    return {
        "pools": POOLS, "queues": len(queues), "polls": polls,
        "round_trips_per_poll": sends / polls,
        "commands_per_poll": commands / polls,
        "commands_by_type": {k.removeprefix("cmdstat_"): v["calls"] // polls for k, v in ours.items()},
        "read_p50_ms": percentile(times, 50) * 1000, "read_p99_ms": percentile(times, 99) * 1000,
    }


# --- 2. the whole tick, Kubernetes in memory --------------------------------------------------------


class MemoryKube:
    """Just enough of KubeApi for a tick: scale patches, deletion costs, status, events (all counted)."""

    def __init__(self) -> None:
        self.replicas: dict[tuple[str, str], int] = {}
        self.calls = 0

    def patch_scale(self, namespace, deployment, replicas):
        self.calls += 1
        self.replicas[(namespace, deployment)] = replicas

    def set_deletion_cost(self, *args):
        self.calls += 1

    def patch_pool_status(self, *args):
        self.calls += 1

    def create_event(self, **kwargs):
        self.calls += 1


class MemoryView:
    """The watch caches (informer.ClusterView), held in memory: reads cost no API call."""

    def __init__(self, kube: MemoryKube):
        self.kube = kube

    def serve(self, namespaces):
        pass

    def stop(self):
        pass

    def ready(self, namespace):
        return True

    def scale(self, namespace, deployment):
        n = self.kube.replicas.setdefault((namespace, deployment), 0)
        return ScaleInfo(replicas=n, status_replicas=n, selector=f"app={deployment}")

    def scaled(self, namespace, deployment, replicas):
        pass

    def pods(self, namespace):
        return []


def memory_pools(queues: list[str]) -> PoolRegistry:
    from renderfarm.operator.models import QueueRef

    registry = PoolRegistry()
    for i in range(POOLS):
        body = {"metadata": {"name": f"pool-{i:02d}", "namespace": "bench", "uid": str(i)},
                "spec": {"deployment": f"worker-{i:02d}", "queues": [{"name": "cpu.normal"}], "maxReplicas": 20,
                         "target": {"backlogPerReplica": 2}}}
        registry.apply("ADDED", body)
    # Swap in the synthetic queue names past validation (the CRD knows only the real 12).
    real_pools = registry.pools

    def pools():
        out = []
        for pool in real_pools():
            index = int(pool.name.split("-")[1])
            spec = pool.spec.model_copy(update={"queues": [QueueRef.model_construct(name=q, weight=1.0)
                                                           for q in queues[index * 4:(index + 1) * 4]]})
            out.append(pool.model_copy(update={"spec": spec}))
        return out

    registry.pools = pools  # type: ignore[method-assign]
    return registry


def measure_tick(server: RedisServer, ticks: int) -> dict[str, Any]:
    queues = synthetic_queues()
    client = redis.Redis(port=server.port, decode_responses=True)
    kube = MemoryKube()
    metrics = OperatorMetrics()
    loop = ScalingLoop(registry=memory_pools(queues), controller=Controller(kube, metrics, view=MemoryView(kube), status_refresh_s=10),
                       reader=QueueReader(client), elector=None, metrics=metrics, interval_s=2.0, workers=4)
    loop.tick()  # first sight of every pool: scale-ups, status writes
    times, calls = [], []
    for _ in range(ticks):
        before = kube.calls
        report = loop.tick()
        times.append(report.duration_s)
        calls.append(kube.calls - before)
    return {"pools": POOLS, "ticks": ticks, "tick_p50_ms": percentile(times, 50) * 1000,
            "tick_p99_ms": percentile(times, 99) * 1000, "api_calls_per_tick_steady": statistics.median(calls)}


# --- 3. reaction time on the local Kubernetes ---------------------------------------------------------


def _cluster_tools() -> tuple[Any, str] | tuple[None, str]:
    k8s_dev = REPO_ROOT / "k8s" / "dev"
    if str(k8s_dev) not in sys.path:
        sys.path.insert(0, str(k8s_dev))
    try:
        import localkube  # type: ignore[import-not-found]
    except ImportError as exc:
        return None, f"k8s/dev/localkube.py not importable: {exc}"
    if not localkube.tools_ready():
        return None, "local Kubernetes tools not built (make k8s-tools)"
    return localkube, ""


def _deployment(name: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"nodeSelector": {"renderfarm.io/pool-class": "cpu"},
                                           "containers": [{"name": "w", "image": "registry.invalid/w:0"}]}}}}


def _pool(name: str, deployment: str, workload: str) -> dict[str, Any]:
    return {"apiVersion": "renderfarm.io/v1alpha1", "kind": "WorkerPool", "metadata": {"name": name},
            "spec": {"deployment": deployment, "queues": [{"name": f"{workload}.{p}"} for p in PRIORITIES],
                     "maxReplicas": 5, "target": {"backlogPerReplica": 1},
                     "scaleDown": {"stabilizationWindowSeconds": 0, "maxStep": 5}, "idleDelaySeconds": 0}}


def _poll_seconds(metrics_port: int) -> tuple[float, float]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("renderfarm_operator_poll_seconds_sum") or line.startswith("renderfarm_operator_poll_seconds_count"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values.get("renderfarm_operator_poll_seconds_sum", 0.0), values.get("renderfarm_operator_poll_seconds_count", 0.0)


def measure_reaction(workdir: Path, trials: int, quick: bool) -> dict[str, Any]:
    localkube, why = _cluster_tools()
    if localkube is None:
        return {"status": "not run", "reason": why}
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    cluster = localkube.LocalCluster()
    server = RedisServer(workdir / "redis-reaction").start()
    operator: ServiceProcess | None = None
    try:
        cluster.start()
        ns = "bench-operator"
        cluster.kubectl("create", "namespace", ns, check=True)
        cluster.kubectl("apply", "-f", CRD_FILE, check=True)
        cluster.kubectl("wait", "--for=condition=Established", "crd/workerpools.renderfarm.io", check=True)
        cluster.kubectl("apply", "-n", ns, "-f", "-", check=True,
                        input=helm_template(cluster.bin_dir / "helm", "--show-only", "templates/operator-rbac.yaml",
                                            namespace=ns))
        kubeconfig = cluster.serviceaccount_kubeconfig(ns, "renderfarm-operator")
        api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
        apps = k8s_client.AppsV1Api(api)
        cluster.kubectl("apply", "-n", ns, "-f", "-", check=True,
                        input=json.dumps({"apiVersion": "v1", "kind": "List",
                                          "items": [_deployment("worker-cpu"), _pool("cpu", "worker-cpu", "cpu")]}))
        port = free_port()
        env = rf_env(server.url, workdir / "data", KUBECONFIG=str(kubeconfig), RF_OPERATOR_NAMESPACE=ns,
                     RF_OPERATOR_METRICS_PORT=str(port), RF_OPERATOR_METRICS_HOST="127.0.0.1")
        operator = ServiceProcess([PYTHON, "-m", "renderfarm.operator"], env, workdir / "operator.log").start()
        wait_for(lambda: "leads (lease" in operator.log() or not operator.alive(), 60, what="operator")
        if not operator.alive():
            raise RuntimeError(f"operator exited:\n{operator.log()[-2000:]}")
        rc = server.client()

        def replicas(name: str) -> int:
            return int(apps.read_namespaced_deployment_scale(name, ns).spec.replicas or 0)

        rng = random.Random(11)
        reactions = []
        for _ in range(trials):
            wait_for(lambda: replicas("worker-cpu") == 0, 30, interval=0.05, what="back to zero")
            time.sleep(rng.uniform(0, 2.0))  # land anywhere in the operator's 2 s tick
            pushed = time.monotonic()
            rc.lpush("cpu.high", "a", "b", "c")
            wait_for(lambda: replicas("worker-cpu") == 3, 30, interval=0.01, what="scale-up")
            reactions.append(time.monotonic() - pushed)
            rc.delete("cpu.high")

        # 50 pools: steady-state poll time and a burst on all of them at once.
        names = [f"p{i:02d}" for i in range(POOLS)]
        items = []
        for i, name in enumerate(names):
            items += [_deployment(f"w-{name}"), _pool(name, f"w-{name}", ("cpu", "gpu-transcribe", "gpu-vision")[i % 3])]
        cluster.kubectl("apply", "-n", ns, "-f", "-", check=True,
                        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
        time.sleep(6)  # first sight of every pool: status writes
        sum0, count0 = _poll_seconds(port)
        time.sleep(6 if quick else 20)
        sum1, count1 = _poll_seconds(port)
        steady_ms = (sum1 - sum0) / max(1, count1 - count0) * 1000
        user = f"system:serviceaccount:{ns}:renderfarm-operator"
        api_rates = {POOLS: request_rates(cluster, user, ns, rc, apps, names, quick)}
        rc.delete("gpu-vision.normal")
        wait_for(lambda: all(replicas(f"w-{name}") == 0 for name in names), 120, interval=1, what="50 back to 0")
        sum1, count1 = _poll_seconds(port)
        pushed = time.monotonic()
        for workload in ("cpu", "gpu-transcribe", "gpu-vision"):
            rc.lpush(f"{workload}.normal", "a", "b")
        wait_for(lambda: all(replicas(f"w-{name}") == 2 for name in names), 60, interval=0.1, what="50 Deployments")
        burst_s = time.monotonic() - pushed
        wait_for(lambda: _poll_seconds(port)[1] >= count1 + 2, 60, interval=0.1, what="the burst's ticks to finish")
        sum2, count2 = _poll_seconds(port)
        more = [f"p{i:03d}" for i in range(POOLS, 500)]
        items = []
        for i, name in enumerate(more, start=POOLS):
            items += [_deployment(f"w-{name}"), _pool(name, f"w-{name}", ("cpu", "gpu-transcribe", "gpu-vision")[i % 3])]
        for workload in ("cpu", "gpu-transcribe", "gpu-vision"):
            rc.delete(f"{workload}.normal")
        for start in range(0, len(items), 200):
            cluster.kubectl("apply", "-n", ns, "-f", "-", check=True,
                            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items[start:start + 200]}))
        all_names = names + more
        wait_for(lambda: all(replicas(f"w-{name}") == 0 for name in names), 120, interval=1, what="50 back to 0")
        api_rates[500] = request_rates(cluster, user, ns, rc, apps, all_names, quick)
        api.close()
        return {
            "status": "ran", "trials": trials, "interval_s": 2.0,
            "reaction_s": [round(r, 3) for r in reactions],
            "reaction_p50_s": percentile(reactions, 50), "reaction_p99_s": percentile(reactions, 99),
            "reaction_max_s": max(reactions),
            "pools_50_steady_tick_ms": steady_ms,
            "pools_50_burst_all_scaled_s": burst_s,
            "pools_50_burst_ticks_ms": (sum2 - sum1) / max(1, count2 - count1) * 1000,
            "operator_as": "ServiceAccount renderfarm-operator (the chart's templates/operator-rbac.yaml)",
            "api_requests": api_rates,
        }
    finally:
        if operator is not None:
            operator.stop(signal.SIGTERM, 15)
        server.stop()
        cluster.stop()


def request_rates(cluster: Any, user: str, ns: str, rc: redis.Redis, apps: Any, names: list[str],
                  quick: bool) -> dict[str, Any]:
    """The operator's API requests per pool per minute: steady, then during a burst (a backlog
    on one workload's queues: a third of the pools scale to 1). From the audit log."""
    from tests.support.audit import by_verb_and_resource, requests_of

    def settled() -> bool:
        out = cluster.kubectl("get", "wp", "-n", ns, "-o", "json", check=True).stdout
        pools = json.loads(out)["items"]
        return len(pools) >= len(names) and all((p.get("status") or {}).get("desiredReplicas") is not None
                                                for p in pools)

    wait_for(settled, 300, interval=2, what=f"{len(names)} pools with a status")
    # Steady state: backlog and replicas unchanged, and the transient after the last change
    # (first-sight writes, rates decaying after a burst, rewritten at most every 30 s) over:
    # no write but the Lease's for 35 s.
    waited = time.monotonic()

    def quiet() -> bool:
        now = time.time()
        return not [r for r in requests_of(cluster.audit_log, user, now - 35, now)
                    if r.resource != "leases" and r.verb != "watch"]

    wait_for(quiet, 240, interval=2, what="the operator's writes to stop")
    quiet_after_s = time.monotonic() - waited
    steady_s = 10.0 if quick else 30.0
    start = time.time()
    time.sleep(steady_s)
    steady = requests_of(cluster.audit_log, user, start, time.time())
    out: dict[str, Any] = {
        "pools": len(names), "quiet_after_s": round(quiet_after_s, 1), "steady_window_s": steady_s,
        "steady_requests": len(steady),
        "steady_per_pool_per_minute": round(len(steady) / len(names) / (steady_s / 60), 4),
        "steady_by_kind": by_verb_and_resource(steady),
    }
    burst_s = 20.0
    start = time.time()
    rc.lpush("gpu-vision.normal", "burst")
    targets = [name for i, name in enumerate(names) if i % 3 == 2]
    wait_for(lambda: all(int(apps.read_namespaced_deployment_scale(f"w-{n}", ns).spec.replicas or 0) >= 1
                         for n in targets[:: max(1, len(targets) // 10)]), 120, interval=0.5, what="the burst")
    time.sleep(max(0.0, start + burst_s - time.time()))
    burst = requests_of(cluster.audit_log, user, start, time.time())
    rc.delete("gpu-vision.normal")
    out.update({"burst_window_s": round(time.time() - start, 1), "burst_pools_scaled": len(targets),
                "burst_requests": len(burst),
                "burst_per_pool_per_minute": round(len(burst) / len(names) / ((time.time() - start) / 60), 4),
                "burst_by_kind": by_verb_and_resource(burst)})
    return out


# --- report ---------------------------------------------------------------------------------------


def measure(workdir: Path, quick: bool) -> dict[str, Any]:
    server = RedisServer(workdir / "redis").start()
    try:
        results = {"redis": measure_redis(server, 50 if quick else 300),
                   "tick": measure_tick(server, 10 if quick else 50)}
    finally:
        server.stop()
    results["reaction"] = measure_reaction(workdir, 3 if quick else 20, quick)
    return results


def run(report: Any, quick: bool | None = None) -> dict[str, Any]:
    results, report = measure_in_scratch(report, "operator", measure, quick)
    if report is None:
        return results
    report.result(SECTION, results)
    r, t, react = results["redis"], results["tick"], results["reaction"]
    report.check(SECTION, "Redis round trips per poll (50 pools x 4 queues)", r["round_trips_per_poll"],
                 limit=TARGET_ROUND_TRIPS, note=f"{r['commands_per_poll']:.0f} commands pipelined; read p50 "
                                                f"{r['read_p50_ms']:.2f} ms, p99 {r['read_p99_ms']:.2f} ms")
    report.row(SECTION, "tick, 50 pools, Kubernetes in memory", measured=f"p50 {t['tick_p50_ms']:.1f} ms",
               note=f"p99 {t['tick_p99_ms']:.1f} ms; {t['api_calls_per_tick_steady']:.0f} API calls per steady tick")
    if react.get("status") != "ran":
        report.row(SECTION, "reaction time", verdict="not run", note=react.get("reason", ""))
        return results
    report.check(SECTION, "reaction backlog -> patched Deployment p99", react["reaction_p99_s"],
                 limit=TARGET_REACTION_P99_S, unit=" s",
                 note=f"p50 {react['reaction_p50_s']:.2f} s over {react['trials']} trials, 2 s interval "
                      f"(KEDA defaults: up to ~45 s)")
    report.row(SECTION, "tick, 50 pools, local Kubernetes", measured=f"{react['pools_50_steady_tick_ms']:.1f} ms",
               note=f"steady; all 50 Deployments scaled {react['pools_50_burst_all_scaled_s']:.2f} s after one burst")
    for pools, rates in react.get("api_requests", {}).items():
        report.check(SECTION, f"API requests per pool per minute, {pools} pools, steady",
                     rates["steady_per_pool_per_minute"], limit=TARGET_REQUESTS_PER_POOL_MINUTE,
                     note=f"{rates['steady_requests']} requests in {rates['steady_window_s']:.0f} s: "
                          + ", ".join(f"{k} {v}" for k, v in rates["steady_by_kind"].items()))
        report.row(SECTION, f"API requests per pool per minute, {pools} pools, burst",
                   measured=f"{rates['burst_per_pool_per_minute']:.2f}",
                   note=f"{rates['burst_pools_scaled']} pools scaled to 1; {rates['burst_requests']} requests in "
                        f"{rates['burst_window_s']:.0f} s: " + ", ".join(f"{k} {v}" for k, v in rates["burst_by_kind"].items()))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    run(report, quick=args.quick)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
