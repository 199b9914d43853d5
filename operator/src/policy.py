"""The scaling decision: a pure function of what was observed, what happened before and the spec.

    decide(observation, state, spec, now) -> Decision(desired, reason, message, conditions, state)

No I/O here: the operator reads Redis and Kubernetes, calls ``decide`` and applies
the result. Every rule of the WorkerPool resource lives in this file:

- the recommendation: ceil((weighted backlog + in-flight) / backlogPerReplica), or for
  targetWaitSeconds the replicas that clear backlog, in-flight and arrivals within that
  time at the measured per-replica throughput; at least 1 while anything waits or runs;
- clamped to [minReplicas, maxReplicas]; a pinned value wins over everything but pause;
- scale up at once (or after the scale-up window), at most ``scaleUp.maxStep`` per decision;
- scale down only to the highest recommendation of the scale-down window, only once that
  window of history is complete, at most ``scaleDown.maxStep`` per decision, and never
  below the number of pods running a job (so scale-in only ever removes idle pods);
- to zero only after backlog and in-flight have both been 0 for ``idleDelaySeconds``;
- backlog unknown (Redis unreadable) -> keep the current size: an error is never a 0;
- pods Pending as Unschedulable -> stop growing;
- paused -> hands off (desired = current, nothing is patched).

Recommendations are kept as change points (a value holds until the next one), which
keeps the history small enough to live in the WorkerPool's status: a restarted
operator picks it up and continues without a jump.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping

from renderfarm.operator.models import WorkerPoolSpec

# Reasons (the Event reason, the status' lastScaleReason, the metric label).
PAUSED = "Paused"
PINNED = "Pinned"
BACKLOG_UNKNOWN = "BacklogUnknown"
CAPACITY_LIMITED = "CapacityLimited"
SCALE_UP = "ScaleUp"
SCALE_FROM_ZERO = "ScaleFromZero"
SCALE_DOWN = "ScaleDown"
SCALE_TO_ZERO = "ScaleToZero"
BELOW_MINIMUM = "BelowMinimum"
ABOVE_MAXIMUM = "AboveMaximum"
STABILIZING = "Stabilizing"
BUSY_REPLICAS = "BusyReplicas"
WAITING_FOR_IDLE = "WaitingForIdle"
STEADY = "Steady"

# Reasons that change the replica count when desired != current.
SCALING_REASONS = frozenset({PINNED, SCALE_UP, SCALE_FROM_ZERO, SCALE_DOWN, SCALE_TO_ZERO,
                             BELOW_MINIMUM, ABOVE_MAXIMUM})

# Smoothing of the measured per-replica throughput (targetWaitSeconds).
THROUGHPUT_ALPHA = 0.2
_EPSILON = 1e-9


@dataclass(frozen=True)
class Observation:
    """What the operator saw this tick. ``None`` means "could not be read", never 0."""

    current_replicas: int
    backlog: Mapping[str, int] | None  # queue -> waiting messages (every list of the queue)
    in_flight: int | None  # jobs taken by a worker of this pool and not finished
    busy_replicas: int = 0  # distinct pods running at least one job
    arrival_rate: float | None = None  # jobs/s, smoothed
    completion_rate: float | None = None  # jobs/s, smoothed
    unschedulable: int = 0  # pods of the Deployment Pending as Unschedulable
    paused_queues: frozenset[str] = frozenset()
    redis_ok: bool = True
    error: str = ""

    @property
    def known(self) -> bool:
        return self.redis_ok and self.backlog is not None and self.in_flight is not None


@dataclass(frozen=True)
class PolicyState:
    """What the decision remembers between ticks (kept in the WorkerPool's status)."""

    observing_since: float | None = None  # history below is complete since then
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, raw recommendation) change points
    idle_since: float | None = None  # backlog and in-flight both 0 since then
    last_scale_up: float | None = None
    last_scale_down: float | None = None
    throughput_per_replica: float | None = None


@dataclass(frozen=True)
class ConditionState:
    status: bool | None  # None -> "Unknown"
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else ("True" if self.status else "False")


@dataclass(frozen=True)
class Decision:
    desired: int
    reason: str
    message: str
    recommended: int | None  # the raw recommendation (None when the backlog is unknown)
    weighted_backlog: float | None
    conditions: Mapping[str, ConditionState] = field(default_factory=dict)
    state: PolicyState = field(default_factory=PolicyState)

    def changes(self, current: int) -> bool:
        return self.desired != current


# --- the recommendation ----------------------------------------------------------


def active_backlog(spec: WorkerPoolSpec, backlog: Mapping[str, int], paused_queues: frozenset[str]) -> int:
    """Jobs waiting in queues the workers consume (a paused queue is not consumed)."""
    return sum(max(0, backlog.get(q, 0)) for q in spec.queue_names if q not in paused_queues)


def weighted_backlog(spec: WorkerPoolSpec, backlog: Mapping[str, int], paused_queues: frozenset[str]) -> float:
    weights = spec.weights
    return sum(weights[q] * max(0, backlog.get(q, 0)) for q in spec.queue_names if q not in paused_queues)


def _ceil(value: float) -> int:
    return max(0, math.ceil(value - _EPSILON))


def recommend(spec: WorkerPoolSpec, backlog: Mapping[str, int], in_flight: int, *,
              paused_queues: frozenset[str] = frozenset(), arrival_rate: float | None = None,
              throughput_per_replica: float | None = None) -> int:
    """Replicas the current load needs, before limits, windows and steps."""
    waiting = weighted_backlog(spec, backlog, paused_queues)
    running = max(0, in_flight)
    target = spec.target
    if target.backlog_per_replica is not None:
        raw = _ceil((waiting + running) / target.backlog_per_replica)
    else:
        seconds = float(target.target_wait_seconds)
        per_replica = throughput_per_replica or target.throughput_per_replica
        if not per_replica:
            raw = _ceil(waiting + running)  # nothing measured yet: one job per replica
        else:
            work = waiting + running + max(0.0, arrival_rate or 0.0) * seconds
            raw = _ceil(work / (per_replica * seconds))
    if active_backlog(spec, backlog, paused_queues) > 0 or running > 0:
        raw = max(raw, 1)  # from zero on any backlog; never zero while a job runs
    return raw


def update_throughput(previous: float | None, spec: WorkerPoolSpec, observation: Observation) -> float | None:
    """Per-replica throughput, measured only while the pool is saturated (work waiting)."""
    rate = observation.completion_rate
    if rate is None or rate <= 0 or observation.current_replicas <= 0 or not observation.known:
        return previous
    assert observation.backlog is not None
    if weighted_backlog(spec, observation.backlog, observation.paused_queues) <= 0:
        return previous
    sample = rate / observation.current_replicas
    return sample if previous is None else previous + THROUGHPUT_ALPHA * (sample - previous)


# --- the history -------------------------------------------------------------------


def history_horizon(spec: WorkerPoolSpec) -> float:
    return float(max(spec.scale_up.stabilization_window_seconds, spec.scale_down.stabilization_window_seconds))


def record(recommendations: tuple[tuple[float, int], ...], now: float, value: int,
           horizon: float) -> tuple[tuple[float, int], ...]:
    """Add a recommendation as a change point and drop what no window can reach any more."""
    recs = list(recommendations)
    if not recs or recs[-1][1] != value:
        recs.append((now, value))
    start = now - horizon
    # Keep the last point at or before the horizon's start: its value is in effect there.
    first = 0
    for index, (moment, _) in enumerate(recs):
        if moment <= start:
            first = index
    return tuple(recs[first:])


def window_values(recommendations: tuple[tuple[float, int], ...], start: float, now: float) -> list[int]:
    """Every recommendation in effect at some moment of [start, now]."""
    values: list[int] = []
    in_effect: int | None = None
    for moment, value in recommendations:
        if moment <= start:
            in_effect = value
        elif moment <= now:
            values.append(value)
    return ([in_effect] if in_effect is not None else []) + values


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


# --- the decision ----------------------------------------------------------------------


def decide(observation: Observation, state: PolicyState, spec: WorkerPoolSpec, now: float, *,
           paused: bool | None = None) -> Decision:
    paused = spec.paused if paused is None else paused
    current = max(0, observation.current_replicas)
    low, high = spec.min_replicas, spec.max_replicas

    # 1. Observe: history, idleness and throughput move on whatever the mode.
    if observation.known:
        assert observation.backlog is not None and observation.in_flight is not None
        # Decide with the estimate from earlier ticks; this tick's sample feeds the next
        # (so the recommendation stays monotone in the backlog).
        raw = recommend(spec, observation.backlog, observation.in_flight,
                        paused_queues=observation.paused_queues, arrival_rate=observation.arrival_rate,
                        throughput_per_replica=state.throughput_per_replica)
        throughput = update_throughput(state.throughput_per_replica, spec, observation)
        waiting = weighted_backlog(spec, observation.backlog, observation.paused_queues)
        idle = active_backlog(spec, observation.backlog, observation.paused_queues) == 0 and observation.in_flight <= 0
        new_state = replace(
            state,
            observing_since=state.observing_since if state.observing_since is not None else now,
            recommendations=record(state.recommendations, now, raw, history_horizon(spec)),
            idle_since=(state.idle_since if state.idle_since is not None else now) if idle else None,
            throughput_per_replica=throughput,
        )
    else:
        # Missing data is not "no load": forget idleness and restart the history, so
        # nothing scales down (let alone to zero) on the strength of a gap.
        raw, waiting = None, None
        new_state = replace(state, observing_since=None, idle_since=None)

    conditions: dict[str, ConditionState] = {
        "Paused": ConditionState(paused, PAUSED if paused else "Active",
                                 "hands off: the Deployment is not patched" if paused else ""),
        "BacklogUnknown": (ConditionState(True, "RedisUnavailable", observation.error or "the queues could not be read")
                           if not observation.known else ConditionState(False, "BacklogRead")),
        "CapacityLimited": (ConditionState(True, "Unschedulable",
                                           f"{observation.unschedulable} pod(s) Pending: Unschedulable")
                            if observation.unschedulable > 0 else ConditionState(False, "Schedulable")),
        "Ready": (ConditionState(True, "Reconciled") if observation.known
                  else ConditionState(False, BACKLOG_UNKNOWN, "keeping the current size until Redis answers")),
    }

    # 2. Decide.
    if paused:
        desired, reason, message = current, PAUSED, "paused: hands off"
        limited = ConditionState(False, PAUSED)
    elif spec.pinned_replicas is not None:
        desired, reason = spec.pinned_replicas, PINNED
        message = f"pinned to {desired} (spec.pinnedReplicas)"
        limited = ConditionState(True, PINNED, message)
    elif raw is None:
        desired = _clamp(current, low, high)
        reason = BACKLOG_UNKNOWN if desired == current else (BELOW_MINIMUM if desired > current else ABOVE_MAXIMUM)
        message = f"backlog unknown ({observation.error or 'Redis unreadable'}): keeping {desired}"
        limited = ConditionState(False, BACKLOG_UNKNOWN)
    else:
        desired, reason, message, limited = _autoscale(observation, new_state, spec, now, current, raw, waiting)

    # 3. Capacity: while pods cannot be scheduled, more replicas would not help; stop
    #    growing (minReplicas still holds: it is a promise, not a recommendation).
    held = max(current, low)
    if (not paused and spec.pinned_replicas is None and observation.unschedulable > 0
            and desired > held):
        message = (f"wanted {desired}, holding {held}: {observation.unschedulable} pod(s) Pending "
                   f"as Unschedulable")
        desired, reason = held, CAPACITY_LIMITED

    conditions["ScalingLimited"] = limited
    if desired > current:
        new_state = replace(new_state, last_scale_up=now)
    elif desired < current:
        new_state = replace(new_state, last_scale_down=now)
    return Decision(desired=desired, reason=reason, message=message, recommended=raw,
                    weighted_backlog=waiting, conditions=conditions, state=new_state)


def _autoscale(observation: Observation, state: PolicyState, spec: WorkerPoolSpec, now: float,
               current: int, raw: int, waiting: float | None) -> tuple[int, str, str, ConditionState]:
    low, high = spec.min_replicas, spec.max_replicas
    target = _clamp(raw, low, high)
    load = f"weighted backlog {waiting:g} + in-flight {observation.in_flight}"
    if raw > high:
        limited = ConditionState(True, "TooManyReplicas", f"recommended {raw}, capped at maxReplicas {high}")
    elif raw < low:
        limited = ConditionState(True, "TooFewReplicas", f"recommended {raw}, raised to minReplicas {low}")
    else:
        limited = ConditionState(False, "DesiredWithinRange")

    if current < low:
        return low if target <= low else max(low, min(target, current + spec.scale_up.max_step)), \
            BELOW_MINIMUM, f"{current} is below minReplicas {low}", limited
    if current > high:
        return high, ABOVE_MAXIMUM, f"{current} is above maxReplicas {high}", limited

    if target > current:
        window = spec.scale_up.stabilization_window_seconds
        stabilized = _clamp(min(window_values(state.recommendations, now - window, now)), low, high)
        step_cap = current + spec.scale_up.max_step
        desired = max(current, min(stabilized, step_cap))
        if desired == current:
            return current, STABILIZING, f"recommended {raw}; waiting out the {window}s scale-up window", limited
        if stabilized > step_cap:
            limited = ConditionState(True, "StepLimited", f"recommended {stabilized}, at most +{spec.scale_up.max_step} per decision")
        reason = SCALE_FROM_ZERO if current == 0 else SCALE_UP
        return desired, reason, f"{current} -> {desired}: {load} (recommended {raw})", limited

    if target < current:
        window = spec.scale_down.stabilization_window_seconds
        if state.observing_since is None or state.observing_since > now - window:
            return current, STABILIZING, f"recommended {raw}; history shorter than the {window}s scale-down window", limited
        stabilized = _clamp(max(window_values(state.recommendations, now - window, now)), low, high)
        if stabilized >= current:
            return current, STABILIZING, f"recommended {raw}; a higher recommendation is inside the {window}s scale-down window", limited
        floor_busy = min(observation.busy_replicas, high)
        desired = max(stabilized, current - spec.scale_down.max_step, floor_busy)
        if stabilized < current - spec.scale_down.max_step and desired == current - spec.scale_down.max_step:
            limited = ConditionState(True, "StepLimited", f"recommended {stabilized}, at most -{spec.scale_down.max_step} per decision")
        idle_for = (now - state.idle_since) if state.idle_since is not None else None
        if desired == 0 and (idle_for is None or idle_for < spec.idle_delay_seconds):
            desired = 1
            if current == 1:
                waited = 0 if idle_for is None else int(idle_for)
                return 1, WAITING_FOR_IDLE, f"idle {waited}s of {spec.idle_delay_seconds}s before scaling to zero", limited
        if desired >= current:
            return current, BUSY_REPLICAS, f"recommended {raw}; {observation.busy_replicas} pod(s) are running jobs", limited
        reason = SCALE_TO_ZERO if desired == 0 else SCALE_DOWN
        return desired, reason, f"{current} -> {desired}: {load} (recommended {raw})", limited

    return current, STEADY, f"{current} replicas for {load}", limited
