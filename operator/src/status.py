"""WorkerPool status <-> policy state (pure).

The status is the operator's memory: the recommendation history, the last scale
times and the measured throughput are written there, so a restarted operator (or a
new leader) continues the same stabilisation windows instead of starting cold.
"""

from __future__ import annotations

from typing import Any, Mapping

from renderfarm.operator.models import (
    CONDITION_TYPES,
    Condition,
    QueueStatus,
    WorkerPoolStatus,
    from_rfc3339,
    to_rfc3339,
)
from renderfarm.operator.policy import ConditionState, Decision, Observation, PolicyState

# The CRD allows 1000 history points; a longer history is cut from the old end and
# observingSince moves with it (the scale-down window then waits to be covered again).
MAX_RECOMMENDATIONS = 1000


def state_from_status(status: WorkerPoolStatus) -> PolicyState:
    """The policy state a (re)started operator continues from.

    Idleness is not carried over: what happened while no operator watched is
    unknown, and scaling to zero on unknown data is exactly what must not happen.
    """
    recs = []
    for rec in status.recommendations:
        moment = from_rfc3339(rec.time)
        if moment is not None:
            recs.append((moment, int(rec.replicas)))
    recs.sort()
    observing_since = from_rfc3339(status.observing_since)
    if observing_since is not None and not recs:
        observing_since = None  # a window claimed covered with no values in it: start over
    return PolicyState(
        observing_since=observing_since,
        recommendations=tuple(recs),
        idle_since=None,
        last_scale_up=from_rfc3339(status.last_scale_up_time),
        last_scale_down=from_rfc3339(status.last_scale_down_time),
        throughput_per_replica=status.throughput_per_replica,
    )


def merge_conditions(previous: list[Condition], new: Mapping[str, ConditionState], now: float) -> list[Condition]:
    """Conditions in a fixed order; lastTransitionTime moves only when the status flips."""
    before = {c.type: c for c in previous}
    out = []
    for type_ in CONDITION_TYPES:
        state = new.get(type_)
        if state is None:
            if type_ in before:
                out.append(before[type_])
            continue
        old = before.get(type_)
        changed = old is None or old.status != state.status_text
        out.append(Condition(
            type=type_, status=state.status_text, reason=state.reason, message=state.message,
            last_transition_time=to_rfc3339(now) if changed else old.last_transition_time,
        ))
    return out


def conditions_changed(previous: list[Condition], merged: list[Condition]) -> list[Condition]:
    """The conditions whose status flipped (each one is worth an Event)."""
    before = {c.type: c.status for c in previous}
    # A condition never written before counts as its quiet value (Ready True, the rest False).
    quiet = {"Ready": "True"}
    return [c for c in merged if before.get(c.type, quiet.get(c.type, "False")) != c.status]


def build_status(*, previous: WorkerPoolStatus, generation: int | None, selector: str | None,
                 queue_names: list[str], observation: Observation, decision: Decision,
                 current_replicas: int, now: float, last_scale: tuple[float, str] | None,
                 in_flight_by_queue: Mapping[str, int] | None) -> WorkerPoolStatus:
    state = decision.state
    recs = list(state.recommendations)[-MAX_RECOMMENDATIONS:]
    observing_since = state.observing_since
    if recs and len(state.recommendations) > MAX_RECOMMENDATIONS and observing_since is not None:
        observing_since = max(observing_since, recs[0][0])
    if observation.known:
        assert observation.backlog is not None
        queues = [QueueStatus(name=q, backlog=int(observation.backlog.get(q, 0)),
                              in_flight=int((in_flight_by_queue or {}).get(q, 0)),
                              paused=q in observation.paused_queues) for q in queue_names]
        backlog: int | None = sum(q.backlog for q in queues)
        in_flight = observation.in_flight
    else:
        # Unknown stays unknown: keep the last numbers read and say so in BacklogUnknown.
        queues, backlog, in_flight = previous.queues, previous.backlog, previous.in_flight
    scale_time, scale_reason = last_scale if last_scale else (
        from_rfc3339(previous.last_scale_time), previous.last_scale_reason)
    return WorkerPoolStatus(
        observed_generation=generation,
        selector=selector if selector is not None else previous.selector,
        queues=queues,
        backlog=backlog,
        weighted_backlog=round(decision.weighted_backlog, 3) if decision.weighted_backlog is not None else previous.weighted_backlog,
        in_flight=in_flight,
        busy_replicas=observation.busy_replicas if observation.known else previous.busy_replicas,
        arrival_rate=_round(observation.arrival_rate),
        completion_rate=_round(observation.completion_rate),
        throughput_per_replica=_round(state.throughput_per_replica, 6),
        desired_replicas=decision.desired,
        current_replicas=current_replicas,
        unschedulable_replicas=observation.unschedulable,
        last_scale_time=to_rfc3339(scale_time) if scale_time is not None else None,
        last_scale_reason=scale_reason,
        last_scale_up_time=to_rfc3339(state.last_scale_up),
        last_scale_down_time=to_rfc3339(state.last_scale_down),
        last_observed_time=to_rfc3339(now),
        observing_since=to_rfc3339(observing_since),
        recommendations=[{"time": to_rfc3339(t), "replicas": v} for t, v in recs],  # type: ignore[misc]
        conditions=merge_conditions(previous.conditions, decision.conditions, now),
    )


def status_patch(status: WorkerPoolStatus) -> dict[str, Any]:
    """A merge patch that replaces the whole status (absent fields become null, i.e. removed)."""
    wire = status.model_dump(by_alias=True, mode="json")
    return {"status": wire}


VOLATILE = ("arrivalRate", "completionRate", "throughputPerReplica")
CLOCKS = ("lastObservedTime",)


def material(status: WorkerPoolStatus) -> dict[str, Any]:
    """The part of a status whose change is worth a write at once (rates and clocks are not)."""
    data = status.model_dump(by_alias=True, mode="json")
    for name in VOLATILE + CLOCKS:
        data.pop(name, None)
    return data


# A rate is worth rewriting when it moved by more than this (absolute jobs/s, or
# relative): a smoothed rate decays toward 0 for minutes after a burst, and every
# fourth decimal of that tail is not news.
RATE_ABS_TOLERANCE = 0.01
RATE_REL_TOLERANCE = 0.1


def rates_moved(rates: dict[str, Any], written: dict[str, Any]) -> str:
    """"known" when a rate became known or unknown, "moved" when one changed by more than
    the tolerance, "" when the written rates still tell the truth (pure)."""
    for name, value in rates.items():
        before = written.get(name)
        if (value is None) != (before is None):
            return "known"
    for name, value in rates.items():
        before = written.get(name)
        if value is not None and before is not None and \
                abs(value - before) > max(RATE_ABS_TOLERANCE, RATE_REL_TOLERANCE * abs(before)):
            return "moved"
    return ""


def volatile(status: WorkerPoolStatus) -> dict[str, Any]:
    """The rates: worth a write when they moved, but not at once (they move on every tick of a busy pool)."""
    data = status.model_dump(by_alias=True, mode="json")
    return {name: data.get(name) for name in VOLATILE}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)
