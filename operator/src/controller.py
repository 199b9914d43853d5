"""The imperative shell: each tick, one Redis read for all pools, then per pool
observe -> decide (policy.decide) -> apply (scale patch, deletion costs, status, Events).

Kubernetes reads come from watch caches (informer.ClusterView: one LIST + WATCH of the
Deployments and one of the pods per namespace), never a GET per pool per tick.
Writes happen only on change: a scale PATCH when the decision differs from the
Deployment, deletion costs before a scale-in, a status PATCH when something worth
showing changed (plus a freshness heartbeat every few minutes), an Event per change.
A steady farm (backlog and replicas unchanged) costs the API server no request per tick.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from pydantic import ValidationError

from renderfarm.operator import policy
from renderfarm.operator.informer import ClusterView
from renderfarm.operator.kube import KubeApi, api_error_text
from renderfarm.operator.leader import LeaderElector
from renderfarm.operator.metrics import OperatorMetrics
from renderfarm.operator.models import Condition, WorkerPool, WorkerPoolStatus
from renderfarm.operator.pods import PodInfo, count_unschedulable, deletion_costs, selector_matches
from renderfarm.operator.policy import Decision, Observation, PolicyState
from renderfarm.operator.queue_reader import QueueReader, RateTracker, Snapshot, busy_pods
from renderfarm.operator.status import (
    build_status,
    conditions_changed,
    material,
    merge_conditions,
    state_from_status,
    rates_moved,
    status_patch,
    volatile,
)

log = logging.getLogger("renderfarm.operator")

EVENT_REASONS = {
    policy.SCALE_UP: "ScaledUp",
    policy.SCALE_FROM_ZERO: "ScaledFromZero",
    policy.SCALE_DOWN: "ScaledDown",
    policy.SCALE_TO_ZERO: "ScaledToZero",
    policy.PINNED: "ScaledToPinned",
    policy.BELOW_MINIMUM: "ScaledToMinimum",
    policy.ABOVE_MAXIMUM: "ScaledToMaximum",
}
WARNING_CONDITIONS = {"BacklogUnknown", "CapacityLimited"}


class PoolRegistry:
    """The WorkerPools this operator serves, fed by kopf's watch (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0

    def apply(self, event_type: str | None, body: dict[str, Any]) -> None:
        meta = body.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self._lock:
            if event_type == "DELETED":
                self._bodies.pop(key, None)
            else:
                self._bodies[key] = body
            self.version += 1

    def keys(self) -> set[tuple[str, str]]:
        with self._lock:
            return set(self._bodies)

    def pools(self) -> list[WorkerPool]:
        with self._lock:
            bodies = list(self._bodies.values())
        out = []
        for body in bodies:
            try:
                out.append(WorkerPool.from_body(body))
            except ValidationError as exc:
                meta = body.get("metadata") or {}
                log.error("WorkerPool %s/%s is invalid, skipped: %s", meta.get("namespace"), meta.get("name"), exc)
        return out


@dataclass
class PoolMemory:
    state: PolicyState
    status: WorkerPoolStatus
    written_material: dict[str, Any] | None = None
    written_volatile: dict[str, Any] | None = None
    written_at: float = 0.0
    unschedulable: int = 0
    last_scale: tuple[float, str] | None = None
    deployment_missing: bool = False


@dataclass
class Outcome:
    """What phase 1 of a pool's tick did, for phase 2 to report."""

    pool: WorkerPool
    memory: PoolMemory
    observation: Observation
    decision: Decision
    current: int
    pods: int
    selector: str
    in_flight_by_queue: dict[str, int] | None
    patched: tuple[int, int] | None
    now: float


class TickPods:
    """The pods of a namespace as the watch cache holds them, filtered per pool's selector."""

    def __init__(self, view: ClusterView):
        self.view = view

    def matching(self, namespace: str, selector: str) -> list[PodInfo]:
        return [pod for pod in self.view.pods(namespace) if selector_matches(selector, pod.labels)]


@dataclass
class TickReport:
    started_at: float
    leader: bool
    snapshot: Snapshot | None = None
    decisions: dict[tuple[str, str], Decision] = field(default_factory=dict)
    patched: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # key -> (from, to)
    duration_s: float = 0.0


class Controller:
    def __init__(self, kube: KubeApi, metrics: OperatorMetrics, *, view: ClusterView | None = None,
                 status_refresh_s: float = 30.0, status_heartbeat_s: float = 300.0,
                 clock: Callable[[], float] = time.time):
        self.kube = kube
        self.view = view if view is not None else ClusterView(kube)
        self.metrics = metrics
        self.status_refresh_s = status_refresh_s
        self.status_heartbeat_s = status_heartbeat_s
        self.clock = clock
        self.memory: dict[tuple[str, str], PoolMemory] = {}
        self._lock = threading.Lock()

    def forget(self, key: tuple[str, str]) -> None:
        with self._lock:
            self.memory.pop(key, None)
        self.metrics.forget_pool(*key)

    def forget_all(self) -> None:
        with self._lock:
            self.memory.clear()

    def _memory(self, pool: WorkerPool) -> PoolMemory:
        with self._lock:
            memory = self.memory.get(pool.key)
            if memory is None:
                # First sight (start, restart, new leader): continue from the status.
                memory = PoolMemory(state=state_from_status(pool.status), status=pool.status)
                self.memory[pool.key] = memory
            return memory

    # -- one pool, one tick ----------------------------------------------------------------
    #
    # Phase 1 (``reconcile``): read the scale, decide, set deletion costs, patch the scale.
    # Phase 2 (``report``): metrics, status, Events. Every pool's phase 1 runs before any
    # phase 2, so a burst on many pools reaches every Deployment as early as it can.

    def reconcile(self, pool: WorkerPool, snapshot: Snapshot, rates: RateTracker,
                  pods: "TickPods") -> "Outcome | None":
        now = self.clock()
        namespace, name, spec = pool.namespace, pool.name, pool.spec
        memory = self._memory(pool)
        if not self.view.ready(namespace):
            # Not listed yet (start-up, or the API server unreachable since): no data, no action.
            self.metrics.api_errors.labels("watch_sync").inc()
            log.warning("%s/%s: Deployments and pods of %s not listed yet", namespace, name, namespace)
            return None
        scale = self.view.scale(namespace, spec.deployment)
        if scale is None:
            self._deployment_missing(pool, memory, now)
            return None
        memory.deployment_missing = False
        current = scale.replicas

        queues = spec.queue_names
        known = snapshot.knows(queues)
        busy = busy_pods(snapshot, queues) if known else {}
        arrival, completion = rates.pool_rates(queues)
        in_flight_by_queue = {q: len(snapshot.queues[q].in_flight) for q in queues} if known else None
        observation = Observation(
            current_replicas=current,
            backlog={q: snapshot.queues[q].backlog for q in queues} if known else None,
            in_flight=sum(in_flight_by_queue.values()) if in_flight_by_queue is not None else None,
            busy_replicas=len(busy),
            arrival_rate=arrival, completion_rate=completion,
            unschedulable=memory.unschedulable,
            paused_queues=frozenset(snapshot.paused) & frozenset(queues),
            redis_ok=known,
            error="" if known else (snapshot.error or "Redis unreadable"),
        )
        decision = policy.decide(observation, memory.state, spec, now, paused=pool.paused)

        # Pods are read only when they can change the answer: growing while pods exist
        # (some may be Unschedulable), pods known Unschedulable, or a scale-in to prepare.
        pod_list = None
        needs_pods = decision.desired < current or memory.unschedulable > 0 or (
            decision.desired > current and scale.status_replicas > 0)
        if not pool.paused and needs_pods:
            try:
                pod_list = pods.matching(namespace, scale.selector)
            except Exception as exc:  # noqa: BLE001
                self.metrics.api_errors.labels("list_pods").inc()
                log.warning("%s/%s: cannot list pods: %s", namespace, name, api_error_text(exc))
                if decision.desired < current:
                    # Without the pods there is no safe choice of which to remove.
                    decision = replace(decision, desired=current, reason=policy.STABILIZING,
                                       message="pods unreadable: not scaling in")
            if pod_list is not None:
                unschedulable = count_unschedulable(pod_list)
                if unschedulable != memory.unschedulable:
                    memory.unschedulable = unschedulable
                    observation = replace(observation, unschedulable=unschedulable)
                    decision = policy.decide(observation, memory.state, spec, now, paused=pool.paused)

        patched = None
        state = decision.state
        if not pool.paused and decision.desired != current:
            try:
                if decision.desired < current and pod_list is not None:
                    for pod, cost in deletion_costs(pod_list, busy).items():
                        self.kube.set_deletion_cost(namespace, pod, cost)
                self.kube.patch_scale(namespace, spec.deployment, decision.desired)
                self.view.scaled(namespace, spec.deployment, decision.desired)
                patched = (current, decision.desired)
                memory.last_scale = (now, decision.reason)
                self.metrics.scale_changes.labels(namespace, name, decision.reason).inc()
                log.info("%s/%s: %s: %s", namespace, name, decision.reason, decision.message)
            except Exception as exc:  # noqa: BLE001
                self.metrics.api_errors.labels("patch_scale").inc()
                log.warning("%s/%s: cannot scale deployments/%s to %d: %s", namespace, name, spec.deployment,
                            decision.desired, api_error_text(exc))
                state = replace(state, last_scale_up=memory.state.last_scale_up,
                                last_scale_down=memory.state.last_scale_down)
                decision = replace(decision, desired=current)
        memory.state = state
        return Outcome(pool=pool, memory=memory, observation=observation, decision=decision, current=current,
                       pods=scale.status_replicas, selector=scale.selector, in_flight_by_queue=in_flight_by_queue,
                       patched=patched, now=now)

    def report(self, outcome: "Outcome") -> None:
        pool, decision = outcome.pool, outcome.decision
        self.metrics.decisions.labels(pool.namespace, pool.name, decision.reason).inc()
        self._record_metrics(pool, outcome.observation, decision, outcome.current if outcome.patched is None
                             else outcome.patched[1])
        if outcome.patched is not None:
            self.kube.create_event(namespace=pool.namespace, name=pool.name, uid=pool.uid,
                                   reason=EVENT_REASONS.get(decision.reason, decision.reason),
                                   message=f"{pool.spec.deployment}: {decision.message}")
        self._write_status(pool, outcome.memory, outcome.observation, decision, outcome.pods, outcome.selector,
                           outcome.in_flight_by_queue, outcome.now)

    def _record_metrics(self, pool: WorkerPool, observation: Observation, decision: Decision, current: int) -> None:
        labels = (pool.namespace, pool.name)
        self.metrics.desired.labels(*labels).set(decision.desired)
        self.metrics.current.labels(*labels).set(current)
        self.metrics.backlog_known.labels(*labels).set(1 if observation.known else 0)
        if observation.known:
            assert observation.backlog is not None
            for queue, depth in observation.backlog.items():
                self.metrics.backlog.labels(*labels, queue).set(depth)
            self.metrics.in_flight.labels(*labels).set(observation.in_flight or 0)

    def _write_status(self, pool: WorkerPool, memory: PoolMemory, observation: Observation, decision: Decision,
                      pods: int, selector: str, in_flight_by_queue, now: float) -> None:
        status = build_status(previous=memory.status, generation=pool.generation, selector=selector,
                              queue_names=pool.spec.queue_names, observation=observation, decision=decision,
                              current_replicas=pods, now=now, last_scale=memory.last_scale,
                              in_flight_by_queue=in_flight_by_queue)
        current_material = material(status)
        if not self._status_due(memory, status, current_material, now):
            return
        flipped = conditions_changed(memory.status.conditions, status.conditions)
        try:
            self.kube.patch_pool_status(pool.namespace, pool.name, status_patch(status))
        except Exception as exc:  # noqa: BLE001
            self.metrics.api_errors.labels("patch_status").inc()
            log.warning("%s/%s: cannot write status: %s", pool.namespace, pool.name, api_error_text(exc))
            return
        memory.status, memory.written_material, memory.written_at = status, current_material, now
        memory.written_volatile = volatile(status)
        for condition in flipped:
            self._condition_event(pool, condition)

    def _status_due(self, memory: PoolMemory, status: WorkerPoolStatus, current_material: dict[str, Any],
                    now: float) -> bool:
        """A status write is due when something that matters changed (at once), when only the
        rates moved (at most every status_refresh_s), or as a heartbeat (every status_heartbeat_s,
        so lastObservedTime shows the pool is still watched). Otherwise nothing is sent."""
        if current_material != memory.written_material:
            return True
        age = now - memory.written_at
        moved = rates_moved(volatile(status), memory.written_volatile or {})
        if moved == "known":
            return True  # a rate became known (or unknown): show it at once, not on a later tick
        if moved:
            return age >= self.status_refresh_s
        return age >= self.status_heartbeat_s

    def _condition_event(self, pool: WorkerPool, condition: Condition) -> None:
        if condition.type == "ScalingLimited":
            return  # follows every recommendation; the scale Events already tell the story
        warning = condition.type in WARNING_CONDITIONS and condition.status == "True"
        reason = f"{condition.type}{'' if condition.status == 'True' else 'Cleared'}"
        if condition.type == "Ready":
            reason = "Ready" if condition.status == "True" else "NotReady"
            warning = condition.status != "True"
        self.kube.create_event(namespace=pool.namespace, name=pool.name, uid=pool.uid, reason=reason,
                               message=condition.message or condition.reason, warning=warning)

    def _deployment_missing(self, pool: WorkerPool, memory: PoolMemory, now: float) -> None:
        if memory.deployment_missing:
            return
        memory.deployment_missing = True
        message = f"deployments/{pool.spec.deployment} not found in {pool.namespace}"
        log.warning("%s/%s: %s", pool.namespace, pool.name, message)
        conditions = merge_conditions(memory.status.conditions, {
            "Ready": policy.ConditionState(False, "DeploymentNotFound", message)}, now)
        status = memory.status.model_copy(update={"conditions": conditions, "observed_generation": pool.generation})
        try:
            self.kube.patch_pool_status(pool.namespace, pool.name, status_patch(status))
            memory.status, memory.written_material = status, None
            self.kube.create_event(namespace=pool.namespace, name=pool.name, uid=pool.uid, reason="DeploymentNotFound",
                                   message=message, warning=True)
        except Exception as exc:  # noqa: BLE001
            log.warning("%s/%s: cannot write status: %s", pool.namespace, pool.name, api_error_text(exc))


class ScalingLoop:
    """Ticks every ``interval_s``: leader check, one Redis read, every pool's decision."""

    def __init__(self, *, registry: PoolRegistry, controller: Controller, reader: QueueReader,
                 elector: LeaderElector | None, metrics: OperatorMetrics, interval_s: float, workers: int = 4):
        self.registry = registry
        self.controller = controller
        self.reader = reader
        self.elector = elector
        self.metrics = metrics
        self.interval_s = interval_s
        self.rates = RateTracker()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rf-pool")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._known_keys: set[tuple[str, str]] = set()
        self._was_leader = False
        self._redis_ok = True
        self.last_tick: TickReport | None = None
        self.last_tick_at: float | None = None  # monotonic
        self.on_tick: Callable[[TickReport], None] | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rf-scaling-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.controller.view.stop()
        if self.elector is not None:
            self.elector.release()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive anything one tick does
                log.exception("tick failed")
            next_at += self.interval_s
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind: do not try to catch up with a burst of ticks
                next_at, delay = time.monotonic(), 0
            self._stop.wait(delay)

    def tick(self) -> TickReport:
        started = time.perf_counter()
        report = TickReport(started_at=time.time(), leader=True)
        if self.elector is not None:
            report.leader = self.elector.tick()
        self.metrics.leader.set(1 if report.leader else 0)
        keys = self.registry.keys()
        for gone in self._known_keys - keys:
            self.controller.forget(gone)
        self._known_keys = keys
        if not report.leader:
            if self._was_leader:
                self.controller.forget_all()  # a later term restarts from the status
            self._was_leader = False
            self._finish(report, started)
            return report
        if not self._was_leader:
            self.controller.forget_all()
        self._was_leader = True

        pools = self.registry.pools()
        self.metrics.pools.set(len(pools))
        queues = {q for pool in pools for q in pool.spec.queue_names}
        snapshot = self.reader.read(queues)
        report.snapshot = snapshot
        self.metrics.redis_seconds.observe(snapshot.duration_s)
        if not snapshot.ok:
            self.metrics.redis_errors.inc()
            if self._redis_ok:
                log.warning("Redis unreadable: %s (holding every pool's size until it answers)", snapshot.error)
        elif not self._redis_ok:
            log.info("Redis readable again")
        self._redis_ok = snapshot.ok
        self.rates.update(snapshot)
        self.controller.view.serve({pool.namespace for pool in pools})
        pods = TickPods(self.controller.view)
        outcomes = []
        for pool, future in [(pool, self._executor.submit(self.controller.reconcile, pool, snapshot, self.rates, pods))
                             for pool in pools]:
            try:
                outcome = future.result()
            except Exception:  # noqa: BLE001
                log.exception("%s/%s: reconcile failed", *pool.key)
                continue
            if outcome is not None:
                outcomes.append(outcome)
                report.decisions[pool.key] = outcome.decision
                if outcome.patched is not None:
                    report.patched[pool.key] = outcome.patched
        for outcome, future in [(o, self._executor.submit(self.controller.report, o)) for o in outcomes]:
            try:
                future.result()
            except Exception:  # noqa: BLE001
                log.exception("%s/%s: report failed", *outcome.pool.key)
        self._finish(report, started)
        return report

    def _finish(self, report: TickReport, started: float) -> None:
        report.duration_s = time.perf_counter() - started
        self.metrics.poll_seconds.observe(report.duration_s)
        self.last_tick, self.last_tick_at = report, time.monotonic()
        if self.on_tick is not None:
            self.on_tick(report)
