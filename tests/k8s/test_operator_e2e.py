"""The WorkerPool operator end to end: a real Kubernetes API (tests/k8s/conftest.py), a real
redis-server, and the operator running out of the cluster as a subprocess, authenticated as
the ServiceAccount bound to the chart's operator Role (never as admin).

The last test closes the loop: real Celery worker processes come and go with the pods the
operator asks for, and 200 jobs all end ``succeeded`` exactly once.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path


from renderfarm.core.jobs import JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.metrics_store import OUTCOMES, parse_outcomes
from renderfarm.core.queues import PRIORITY_ORDER, Priority, pool_queues, redis_list_keys
from renderfarm.core.store import JobStore, inflight_key
from renderfarm.core.submit import job_message, new_job
from renderfarm.operator.models import WorkerPoolSpec
from renderfarm.operator.policy import recommend
from tests.k8s.operator_fixtures import farm, poll, worker_deployment, worker_pool, workerpool_crd  # noqa: F401
from tests.support.media import make_clip
from tests.support.procs import ServiceProcess, start_worker

CPU = pool_queues("cpu")
GPU = pool_queues("gpu-transcribe")
INTERVAL_S = 2.0  # the operator's default tick


def push(farm, queue_key: str, count: int) -> None:
    if count:
        farm.redis().lpush(queue_key, *[f"dummy-{i}" for i in range(count)])


def spec_of(farm, pool: str) -> WorkerPoolSpec:
    return WorkerPoolSpec.model_validate(farm.pool(pool)["spec"])


# --- scaling up ----------------------------------------------------------------------------------


def test_backlog_on_every_priority_scales_up_within_5_s_to_the_policy_value(farm):
    farm.apply(worker_deployment("worker-cpu"))
    farm.apply(worker_pool("cpu", "worker-cpu", CPU, maxReplicas=20, target={"backlogPerReplica": 3},
                           weights={"cpu.critical": 2.0}))
    operator = farm.start_operator()
    poll(lambda: farm.condition_is("cpu", "Ready", "True"), 15, "the pool to be Ready")

    # Every priority, in the base lists and in kombu's priority sub-lists a plain LLEN misses.
    waiting = {"cpu.critical": 2, "cpu.high": 3, "cpu.normal": 4, "cpu.low": 5}
    for queue, count in waiting.items():
        base, sub3, _, sub9 = redis_list_keys(queue)
        push(farm, base, count - 2)
        push(farm, sub3, 1)
        push(farm, sub9, 1)
    pushed_at = time.monotonic()
    expected = recommend(spec_of(farm, "cpu"), waiting, 0)
    assert expected == 6  # (2*2 + 3 + 4 + 5) / 3 = 5.33 -> 6
    farm.wait_replicas("worker-cpu", lambda n: n == expected, 10, f"== {expected}")
    reaction_s = time.monotonic() - pushed_at
    assert reaction_s <= 5.0, f"took {reaction_s:.2f}s from backlog to the patched Deployment"

    status = poll(lambda: (s := farm.pool("cpu").get("status", {})).get("desiredReplicas") == expected and s, 10,
                  "status.desiredReplicas")
    assert status["backlog"] == 14
    assert {q["name"]: q["backlog"] for q in status["queues"]} == waiting
    assert status["lastScaleReason"] == "ScaleFromZero"
    events = poll(lambda: [e for e in farm.events("cpu") if e.reason == "ScaledFromZero"], 10, "a scaling Event")
    assert "0 -> 6" in events[0].message
    metrics = farm.metrics(operator)
    labels = f'namespace="{farm.namespace}",pool="cpu"'
    assert metrics[f"renderfarm_pool_replicas_desired{{{labels}}}"] == expected
    assert metrics[f'renderfarm_pool_backlog{{{labels},queue="cpu.low"}}'] == 5
    assert metrics[f'renderfarm_scaling_decisions_total{{{labels},reason="ScaleFromZero"}}'] == 1
    assert metrics["renderfarm_operator_poll_seconds_count"] >= 1
    listing = farm.kubectl("get", "wp").stdout
    assert "DESIRED" in listing and "IN-FLIGHT" in listing


# --- scaling down ----------------------------------------------------------------------------------


def test_drained_queues_scale_down_after_the_window_and_to_zero_after_the_idle_delay(farm):
    farm.apply(worker_deployment("worker-cpu"))
    farm.apply(worker_pool("cpu", "worker-cpu", CPU, maxReplicas=10, target={"backlogPerReplica": 2},
                           scaleDown={"stabilizationWindowSeconds": 8, "maxStep": 2}, idleDelaySeconds=12))
    farm.start_operator()
    push(farm, "cpu.normal", 8)
    farm.wait_replicas("worker-cpu", lambda n: n == 4, 10, "== 4")
    poll(lambda: len([p for p in farm.pods("app=worker-cpu") if p.status.phase == "Running"]) == 4, 20, "4 Running pods")

    # The queue drains; one job is still running on one pod.
    busy_pod = sorted(p.metadata.name for p in farm.pods("app=worker-cpu"))[1]
    redis = farm.redis()
    redis.hset(inflight_key("cpu.normal"), "job-1", f"cpu@{busy_pod}")
    redis.delete("cpu.normal")
    drained_at = time.monotonic()
    farm.wait_replicas("worker-cpu", lambda n: n < 4, 20, "< 4")
    assert time.monotonic() - drained_at >= 8 - INTERVAL_S, "scaled down before the 8 s window had passed"
    farm.wait_replicas("worker-cpu", lambda n: n == 1, 20, "== 1")
    # Not to zero while the job is in flight, however long past the idle delay.
    time.sleep(12 + 2 * INTERVAL_S)
    assert farm.replicas("worker-cpu") == 1
    # The pod that kept running its job is the one left (pod-deletion-cost chose the idle ones).
    survivors = [p.metadata.name for p in farm.pods("app=worker-cpu") if not p.metadata.deletion_timestamp]
    assert survivors == [busy_pod]
    costs = {p.metadata.name: (p.metadata.annotations or {}).get("controller.kubernetes.io/pod-deletion-cost")
             for p in farm.pods("app=worker-cpu")}
    assert int(costs[busy_pod]) > 0

    redis.hdel(inflight_key("cpu.normal"), "job-1")
    idle_at = time.monotonic()
    farm.wait_replicas("worker-cpu", lambda n: n == 0, 30, "== 0")
    assert time.monotonic() - idle_at >= 12 - INTERVAL_S, "scaled to zero before the idle delay"
    poll(lambda: {"ScaledDown", "ScaledToZero"} <= {e.reason for e in farm.events("cpu")}, 10,
         "ScaledDown and ScaledToZero Events")


# --- Redis down --------------------------------------------------------------------------------------


def test_redis_outage_holds_replicas_and_says_backlog_unknown(farm):
    farm.apply(worker_deployment("worker-cpu"))
    farm.apply(worker_pool("cpu", "worker-cpu", CPU, maxReplicas=10, target={"backlogPerReplica": 2},
                           scaleDown={"stabilizationWindowSeconds": 0, "maxStep": 10}, idleDelaySeconds=0))
    operator = farm.start_operator()
    push(farm, "cpu.high", 6)
    farm.wait_replicas("worker-cpu", lambda n: n == 3, 10, "== 3")

    farm.stop_redis()
    poll(lambda: farm.condition_is("cpu", "BacklogUnknown", "True"), 15, "BacklogUnknown=True")
    # With no window and no idle delay, reading the error as "0 waiting" would drop to zero at once.
    for _ in range(4):
        time.sleep(INTERVAL_S)
        assert farm.replicas("worker-cpu") == 3
    assert farm.condition_is("cpu", "Ready", "False")
    assert farm.metrics(operator)["renderfarm_operator_redis_errors_total"] >= 2
    assert any(e.reason == "BacklogUnknown" and e.type == "Warning" for e in farm.events("cpu"))

    farm.start_redis()  # same port, same data (append-only file): 6 still waiting
    poll(lambda: farm.condition_is("cpu", "BacklogUnknown", "False"), 15, "BacklogUnknown=False")
    assert farm.replicas("worker-cpu") == 3
    push(farm, "cpu.high", 4)
    farm.wait_replicas("worker-cpu", lambda n: n == 5, 10, "== 5 (scaling resumed)")


# --- manual control -------------------------------------------------------------------------------------


def test_kubectl_scale_pins_clearing_resumes_and_pause_means_no_patches(farm):
    farm.apply(worker_deployment("worker-cpu"))
    farm.apply(worker_pool("cpu", "worker-cpu", CPU, maxReplicas=5, target={"backlogPerReplica": 1},
                           scaleDown={"stabilizationWindowSeconds": 0, "maxStep": 10}, idleDelaySeconds=0))
    farm.start_operator()
    push(farm, "cpu.normal", 2)
    farm.wait_replicas("worker-cpu", lambda n: n == 2, 10, "== 2")

    # A pin wins over the recommendation (and over maxReplicas).
    farm.kubectl("scale", "wp/cpu", "--replicas=7")
    farm.wait_replicas("worker-cpu", lambda n: n == 7, 10, "== 7 (pinned)")
    assert farm.pool("cpu")["spec"]["pinnedReplicas"] == 7
    time.sleep(2 * INTERVAL_S)
    assert farm.replicas("worker-cpu") == 7
    assert farm.condition("cpu", "ScalingLimited")["reason"] == "Pinned"
    scale = farm.custom.get_namespaced_custom_object_scale("renderfarm.io", "v1alpha1", farm.namespace,
                                                           "workerpools", "cpu")
    assert scale["spec"]["replicas"] == 7

    farm.kubectl("patch", "wp/cpu", "--type=merge", "-p", '{"spec":{"pinnedReplicas":null}}')
    farm.wait_replicas("worker-cpu", lambda n: n == 2, 10, "== 2 (autoscaling again)")

    # Paused: hands off. A person scales the Deployment by hand; the operator leaves it.
    farm.kubectl("annotate", "wp/cpu", "renderfarm.io/paused=true")
    poll(lambda: farm.condition_is("cpu", "Paused", "True"), 10, "Paused=True")
    farm.kubectl("scale", "deployment/worker-cpu", "--replicas=1")
    generation = farm.deployment_generation("worker-cpu")
    push(farm, "cpu.normal", 3)
    time.sleep(4 * INTERVAL_S)
    assert farm.replicas("worker-cpu") == 1
    assert farm.deployment_generation("worker-cpu") == generation  # not one patch
    assert farm.pool("cpu")["status"]["desiredReplicas"] == 1

    farm.kubectl("annotate", "wp/cpu", "renderfarm.io/paused-")
    farm.wait_replicas("worker-cpu", lambda n: n == 5, 10, "== 5 (unpaused: 5 waiting)")


# --- capacity -----------------------------------------------------------------------------------------------


def test_gpu_pool_beyond_the_gpu_nodes_is_capacity_limited_and_stops_growing(farm):
    poll(lambda: not farm.gpu_pods_elsewhere(), 90, "GPU nodes free of other tests' pods", interval=1)
    farm.apply(worker_deployment("worker-gpu-transcribe", gpu=True))
    farm.apply(worker_pool("gpu-transcribe", "worker-gpu-transcribe", GPU, maxReplicas=10,
                           target={"backlogPerReplica": 1}, scaleUp={"maxStep": 2}))
    farm.start_operator()
    push(farm, "gpu-transcribe.normal", 10)  # 10 wanted; 2 one-GPU nodes

    poll(lambda: farm.condition_is("gpu-transcribe", "CapacityLimited", "True"), 20, "CapacityLimited=True")
    held = farm.replicas("worker-gpu-transcribe")
    assert 2 < held <= 6, f"grew to {held}"
    for _ in range(4):
        time.sleep(INTERVAL_S)
        assert farm.replicas("worker-gpu-transcribe") == held
    pods = farm.pods("app=worker-gpu-transcribe")
    assert sum(1 for p in pods if p.status.phase == "Running") == 2
    assert sum(1 for p in pods if p.status.phase == "Pending") == held - 2
    status = farm.pool("gpu-transcribe")["status"]
    assert status["lastScaleReason"] in {"ScaleUp", "ScaleFromZero"}
    assert status["unschedulableReplicas"] == held - 2
    assert any(e.reason == "CapacityLimited" and e.type == "Warning" for e in farm.events("gpu-transcribe"))


# --- restart and leadership -------------------------------------------------------------------------------------


def test_operator_restart_and_a_second_replica_cause_no_jump(farm):
    farm.apply(worker_deployment("worker-cpu"))
    farm.apply(worker_pool("cpu", "worker-cpu", CPU, maxReplicas=10, target={"backlogPerReplica": 2},
                           scaleDown={"stabilizationWindowSeconds": 20, "maxStep": 1}, idleDelaySeconds=60))
    first = farm.start_operator()
    push(farm, "cpu.normal", 6)
    farm.wait_replicas("worker-cpu", lambda n: n == 3, 10, "== 3")
    farm.redis().ltrim("cpu.normal", 0, 1)  # 2 left: 1 replica recommended, after the 20 s window
    drained_at = time.monotonic()

    seen: list[tuple[float, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append((time.monotonic() - drained_at, farm.replicas("worker-cpu")))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        # A second replica stands by while the first leads: it must not scale anything.
        second = farm.start_operator(wait_leader=False)
        time.sleep(3 * INTERVAL_S)
        assert "leads (lease" not in second.log()
        assert farm.metrics(second)["renderfarm_operator_leader"] == 0
        # The leader stops cleanly (hands the Lease back); the standby takes over at once
        # and continues the stabilisation window from the status.
        first.stop(signal.SIGTERM, 15)
        poll(lambda: "leads (lease" in second.log(), 10, "the standby to lead")
        farm.wait_replicas("worker-cpu", lambda n: n < 3, 40, "< 3 after the window")
    finally:
        stop.set()
        watcher.join(5)
    early = [n for t, n in seen if t < 20 - INTERVAL_S]
    assert early and set(early) == {3}, f"replicas moved inside the scale-down window: {sorted(set(early))}"
    assert max(n for _, n in seen) == 3
    farm.wait_replicas("worker-cpu", lambda n: n == 1, 20, "== 1")
    # A plain restart of the only operator: nothing moves.
    second.stop(signal.SIGTERM, 15)
    before = farm.replicas("worker-cpu")
    farm.start_operator()
    time.sleep(3 * INTERVAL_S)
    assert farm.replicas("worker-cpu") == before == 1


# --- RBAC -----------------------------------------------------------------------------------------------------------


def test_the_operator_service_account_has_only_what_it_needs(farm):
    who = f"--as=system:serviceaccount:{farm.namespace}:renderfarm-operator"

    def can(*args: str) -> bool:
        return farm.kubectl("auth", "can-i", *args, who, check=False).stdout.strip() == "yes"

    assert can("patch", "deployments", "--subresource=scale")
    assert can("watch", "deployments") and can("list", "deployments")  # the replica cache
    assert not can("get", "deployments", "--subresource=scale")  # read from the cache, never per tick
    assert can("list", "pods") and can("watch", "pods") and can("patch", "pods")
    assert can("patch", "workerpools.renderfarm.io", "--subresource=status")
    assert can("watch", "workerpools.renderfarm.io")
    assert can("create", "events")
    assert not can("patch", "deployments")
    assert not can("update", "deployments")
    assert not can("delete", "pods")
    assert not can("patch", "workerpools.renderfarm.io")  # users own the spec
    assert not can("get", "secrets")
    assert not can("list", "pods", "--all-namespaces")
    assert can("update", "leases.coordination.k8s.io/renderfarm-operator")
    assert not can("update", "leases.coordination.k8s.io/someone-elses-lease")


# --- the closing loop: real workers follow the pods -------------------------------------------------------------------


class PodWorkers:
    """One local Celery worker per Running pod of the worker Deployment.

    kwok removes a deleted pod at once (no grace period is simulated), so the harness
    gives the worker what the kubelet would: SIGTERM, then the grace period to finish
    its job (Celery's warm shutdown) before SIGKILL.
    """

    def __init__(self, farm, env: dict[str, str], selector: str, grace_s: float = 30.0):
        self.farm, self.env, self.selector, self.grace_s = farm, env, selector, grace_s
        self.workers: dict[str, ServiceProcess] = {}
        self.history: list[tuple[float, str, str]] = []  # (time, "start"|"stop", pod)
        self._stop = threading.Event()
        self._stoppers: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "PodWorkers":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)
        for name in list(self.workers):
            self._terminate(name)
        for thread in self._stoppers:
            thread.join(self.grace_s + 10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self.farm.pods(self.selector)
            except Exception:  # noqa: BLE001 - the API may blip; try again
                time.sleep(0.2)
                continue
            running = {p.metadata.name for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp}
            for name in sorted(running - set(self.workers)):
                self.workers[name] = start_worker(self.env, pool="cpu", name=f"cpu@{name}", wait=False,
                                                  log_dir=Path(self.env["RF_DATA_DIR"]) / "logs")
                self.history.append((time.monotonic(), "start", name))
            for name in sorted(set(self.workers) - running):
                self._terminate(name)
            time.sleep(0.2)

    def _terminate(self, name: str) -> None:
        proc = self.workers.pop(name)
        self.history.append((time.monotonic(), "stop", name))
        thread = threading.Thread(target=self._kubelet_stop, args=(proc,), daemon=True)
        thread.start()
        self._stoppers.append(thread)

    def _kubelet_stop(self, proc: ServiceProcess) -> None:
        # As the kubelet does: SIGTERM to the container's main process only (never to its
        # pool children, which would kill the running job), SIGKILL to all after the grace.
        if proc.proc is None or proc.proc.poll() is not None:
            return
        proc.proc.send_signal(signal.SIGTERM)
        try:
            proc.proc.wait(self.grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_200_jobs_through_scale_up_and_scale_down_each_succeed_exactly_once(farm):
    farm.apply(worker_deployment("worker-cpu"))
    farm.apply(worker_pool("cpu", "worker-cpu", CPU, maxReplicas=4, target={"backlogPerReplica": 5},
                           scaleUp={"maxStep": 2}, scaleDown={"stabilizationWindowSeconds": 4, "maxStep": 1},
                           idleDelaySeconds=4))
    farm.start_operator()
    env = farm.operator_env()
    for key in ("KUBECONFIG", "RF_OPERATOR_NAMESPACE", "RF_OPERATOR_METRICS_PORT", "RF_OPERATOR_METRICS_HOST"):
        env.pop(key, None)
    clip = make_clip(Path(env["RF_DATA_DIR"]) / "inputs" / "clip.mp4", duration=0.5, width=64, height=48)
    store = JobStore(farm.redis())
    kind = get_kind("probe")
    ids: list[str] = []

    def submit(n: int, priority: Priority) -> None:
        for _ in range(n):
            job = new_job(kind, input=clip.as_uri(), params={}, priority=priority)
            stored, created = store.submit(job, job_message(kind, job))
            assert created
            ids.append(stored.id)

    replicas_seen: list[tuple[float, int]] = []
    with PodWorkers(farm, env, "app=worker-cpu") as workers:
        started = time.monotonic()
        # A burst on every priority: the pool grows to its maximum...
        for priority in PRIORITY_ORDER:
            submit(25, priority)
        farm.wait_replicas("worker-cpu", lambda n: n == 4, 15, "== 4 (burst)")
        # ...then a trickle it can serve with one replica: it shrinks while jobs still flow.
        while len(ids) < 200:
            submit(1, PRIORITY_ORDER[len(ids) % 4])
            replicas_seen.append((time.monotonic() - started, farm.replicas("worker-cpu")))
            time.sleep(0.3)
        poll(lambda: all(store.status_of(i) == JobStatus.succeeded for i in ids) or None, 180,
             "all 200 jobs to succeed", interval=1)
        finished_at = time.monotonic() - started
        farm.wait_replicas("worker-cpu", lambda n: n == 0, 30, "== 0 after the drain")
    stops = [pod for _, what, pod in workers.history if what == "stop"]
    assert max(n for _, n in replicas_seen) == 4
    assert any(n < 4 for _, n in replicas_seen), f"never scaled in while jobs flowed: {replicas_seen}"
    assert len(stops) >= 4, f"workers stopped: {stops}"

    jobs = [store.get(i) for i in ids]
    assert len(set(ids)) == 200
    assert all(job.status == JobStatus.succeeded for job in jobs)
    assert [job.id for job in jobs if job.attempts != 1] == [], "jobs run more than once"
    outcomes = parse_outcomes(farm.redis().hgetall(OUTCOMES))
    assert sum(v for k, v in outcomes.items() if k.status == "succeeded") == 200
    assert sum(v for k, v in outcomes.items() if k.status != "succeeded") == 0
    assert finished_at < 180
