"""The WorkerPool scaling policy (renderfarm.operator.policy): properties and one example per rule."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from renderfarm.core.queues import pool_queues
from renderfarm.operator import policy
from renderfarm.operator.models import WorkerPool, WorkerPoolSpec, WorkerPoolStatus
from renderfarm.operator.policy import Observation, PolicyState, decide, recommend
from renderfarm.operator.status import build_status, state_from_status

CPU = pool_queues("cpu")  # cpu.critical, cpu.high, cpu.normal, cpu.low
NOW = 1_000_000.0
INTERVAL = 2.0


def make_spec(**overrides) -> WorkerPoolSpec:
    data = {
        "deployment": "worker-cpu",
        "queues": [{"name": q} for q in CPU],
        "minReplicas": 0,
        "maxReplicas": 10,
        "target": {"backlogPerReplica": 1},
        "scaleUp": {"stabilizationWindowSeconds": 0, "maxStep": 10},
        "scaleDown": {"stabilizationWindowSeconds": 30, "maxStep": 2},
        "idleDelaySeconds": 60,
    }
    data.update(overrides)
    return WorkerPoolSpec.model_validate(data)


def obs(current: int, backlog: int | dict[str, int] = 0, in_flight: int = 0, **kw) -> Observation:
    if isinstance(backlog, int):
        backlog = {"cpu.normal": backlog}
    kw.setdefault("busy_replicas", min(in_flight, current))
    return Observation(current_replicas=current, backlog=backlog, in_flight=in_flight, **kw)


UNKNOWN = dict(backlog=None, in_flight=None, redis_ok=False, error="Connection refused")


def warm(spec: WorkerPoolSpec, raw_load: int, since: float = NOW - 3600) -> PolicyState:
    """A state whose history is complete and flat at the recommendation for ``raw_load``."""
    value = recommend(spec, {"cpu.normal": raw_load}, 0)
    return PolicyState(observing_since=since, recommendations=((since, value),))


def run(spec: WorkerPoolSpec, loads, *, current: int, state: PolicyState | None = None, start: float = NOW,
        unschedulable: int = 0):
    """Simulate ticks: each load is (backlog, in_flight); the Deployment follows every decision."""
    state = state or PolicyState()
    now = start
    seen = []
    for backlog, in_flight in loads:
        decision = decide(obs(current, backlog, in_flight, unschedulable=unschedulable), state, spec, now)
        state, current = decision.state, decision.desired
        seen.append(current)
        now += INTERVAL
    return seen, state


# --- strategies -----------------------------------------------------------------------


@st.composite
def specs(draw, target_kind=None):
    low = draw(st.integers(0, 4))
    high = draw(st.integers(max(low, 1), low + 20))
    kind = target_kind or draw(st.sampled_from(["backlog", "wait"]))
    if kind == "backlog":
        target = {"backlogPerReplica": draw(st.integers(1, 8))}
    else:
        target = {"targetWaitSeconds": draw(st.sampled_from([10.0, 30.0, 120.0]))}
        if draw(st.booleans()):
            target["throughputPerReplica"] = draw(st.sampled_from([0.05, 0.2, 1.0]))
    weights = draw(st.lists(st.sampled_from([0.5, 1.0, 2.0, 4.0]), min_size=4, max_size=4))
    return make_spec(
        queues=[{"name": q, "weight": w} for q, w in zip(CPU, weights)],
        minReplicas=low, maxReplicas=high, target=target,
        scaleUp={"stabilizationWindowSeconds": draw(st.sampled_from([0, 0, 10, 30])), "maxStep": draw(st.integers(1, 10))},
        scaleDown={"stabilizationWindowSeconds": draw(st.sampled_from([0, 10, 60, 120])), "maxStep": draw(st.integers(1, 5))},
        idleDelaySeconds=draw(st.sampled_from([0, 10, 60, 300])),
    )


backlogs = st.fixed_dictionaries({q: st.integers(0, 200) for q in CPU})


@st.composite
def states(draw):
    if draw(st.booleans()):
        return PolicyState()
    times = sorted(draw(st.lists(st.floats(NOW - 600, NOW - 0.5), min_size=1, max_size=8, unique=True)))
    recs = tuple((t, draw(st.integers(0, 40))) for t in times)
    return PolicyState(
        observing_since=draw(st.one_of(st.none(), st.floats(NOW - 900, NOW))) if recs else None,
        recommendations=recs,
        idle_since=draw(st.one_of(st.none(), st.floats(NOW - 900, NOW))),
        throughput_per_replica=draw(st.one_of(st.none(), st.sampled_from([0.01, 0.1, 1.0]))),
    )


@st.composite
def observations(draw):
    in_flight = draw(st.integers(0, 40))
    current = draw(st.integers(0, 30))
    return Observation(
        current_replicas=current,
        backlog=draw(backlogs),
        in_flight=in_flight,
        busy_replicas=draw(st.integers(0, min(in_flight, current))),
        arrival_rate=draw(st.one_of(st.none(), st.floats(0, 5))),
        completion_rate=draw(st.one_of(st.none(), st.floats(0, 5))),
        unschedulable=draw(st.sampled_from([0, 0, 0, 1, 3])),
        paused_queues=frozenset(draw(st.lists(st.sampled_from(CPU), max_size=2))),
    )


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- properties -------------------------------------------------------------------------


@PROPERTY
@given(spec=specs(), state=states(), observation=observations(), known=st.booleans())
def test_desired_never_leaves_min_max_unless_pinned_or_paused(spec, state, observation, known):
    if not known:
        observation = Observation(current_replicas=observation.current_replicas, **UNKNOWN)
    decision = decide(observation, state, spec, NOW)
    assert spec.min_replicas <= decision.desired <= spec.max_replicas


@PROPERTY
@given(spec=specs(), state=states(), observation=observations(), pinned=st.integers(0, 50))
def test_pinned_value_wins_over_everything_but_pause(spec, state, observation, pinned):
    spec = spec.model_copy(update={"pinned_replicas": pinned})
    assert decide(observation, state, spec, NOW).desired == pinned
    assert decide(observation, state, spec, NOW, paused=True).desired == observation.current_replicas


@PROPERTY
@given(spec=specs(), state=states(), observation=observations(), known=st.booleans())
def test_never_scales_to_zero_while_a_job_is_in_flight(spec, state, observation, known):
    assume(observation.in_flight > 0 and observation.current_replicas > 0)
    if not known:
        observation = Observation(current_replicas=observation.current_replicas, **UNKNOWN)
    assert decide(observation, state, spec, NOW).desired > 0


@PROPERTY
@given(spec=specs(), state=states(), observation=observations())
def test_scale_in_never_goes_below_the_pods_running_jobs(spec, state, observation):
    decision = decide(observation, state, spec, NOW)
    if decision.desired < observation.current_replicas:
        assert decision.desired >= min(observation.busy_replicas, spec.max_replicas)


@PROPERTY
@given(spec=specs(), state=states(), observation=observations(), more=backlogs)
def test_desired_is_monotone_in_backlog(spec, state, observation, more):
    bigger = {q: observation.backlog[q] + more[q] for q in CPU}
    larger = Observation(**{**observation.__dict__, "backlog": bigger})
    assert decide(observation, state, spec, NOW).desired <= decide(larger, state, spec, NOW).desired


@PROPERTY
@given(spec=specs(), state=states(), observation=observations())
def test_paused_means_hands_off(spec, state, observation):
    decision = decide(observation, state, spec, NOW, paused=True)
    assert decision.desired == observation.current_replicas
    assert decision.reason == policy.PAUSED
    assert decision.conditions["Paused"].status is True


@PROPERTY
@given(spec=specs(), current=st.integers(0, 30), backlog=st.integers(0, 300), in_flight=st.integers(0, 20))
def test_constant_load_settles_without_oscillation(spec, current, backlog, in_flight):
    ticks = int((spec.scale_down.stabilization_window_seconds + spec.idle_delay_seconds) / INTERVAL) + 60
    seen, _ = run(spec, [(backlog, in_flight)] * ticks, current=current)
    path = [current] + seen
    steps = [b - a for a, b in zip(path, path[1:]) if b != a]
    assert all(s > 0 for s in steps) or all(s < 0 for s in steps), f"changed direction: {path}"
    assert seen[-1] == seen[-2] == seen[-3], f"did not settle: {path}"


@PROPERTY
@given(spec=specs(target_kind="backlog"), peak=st.integers(1, 400), rise=st.integers(1, 10),
       hold=st.integers(0, 20), drain=st.integers(1, 60))
def test_burst_then_drain_reaches_minimum_without_bouncing(spec, peak, rise, hold, drain):
    # Work = waiting + running: workers take jobs from the backlog into flight, which
    # does not change the total; the total rises, holds, then drains to nothing.
    # A queue weighted above 1 counts a job more while it waits than while it runs, so
    # its demand falls as jobs start and rises as replicas leave: with no scale-down
    # window that moves replicas both ways by design (found by this test: weight 4,
    # windows 0: 0 -> 3 -> 2 -> 4). The property holds for the unweighted load.
    assume(spec.weights["cpu.normal"] <= 1.0)
    totals = [peak * (i + 1) // rise for i in range(rise)] + [peak] * hold
    totals += [peak * (drain - i - 1) // drain for i in range(drain)]
    ticks = int((spec.scale_down.stabilization_window_seconds + spec.idle_delay_seconds) / INTERVAL)
    totals += [0] * (ticks + spec.max_replicas // spec.scale_down.max_step + 10)
    current, state, now, path = spec.min_replicas, PolicyState(), NOW, [spec.min_replicas]
    for total in totals:
        in_flight = min(current, total)
        decision = decide(obs(current, total - in_flight, in_flight), state, spec, now)
        state, current, now = decision.state, decision.desired, now + INTERVAL
        path.append(current)
    peak_at = path.index(max(path))
    assert path[:peak_at + 1] == sorted(path[:peak_at + 1]), f"dipped on the way up: {path}"
    assert path[peak_at:] == sorted(path[peak_at:], reverse=True), f"bounced on the way down: {path}"
    assert path[-1] == spec.min_replicas


# --- one example per rule -------------------------------------------------------------------


def test_backlog_per_replica_counts_every_queue_weighted_plus_in_flight():
    spec = make_spec(queues=[{"name": "cpu.critical", "weight": 2}, {"name": "cpu.low"}],
                     target={"backlogPerReplica": 4})
    # (2*3 + 5 + 3) / 4 = 3.5 -> 4
    assert recommend(spec, {"cpu.critical": 3, "cpu.low": 5, "cpu.high": 100}, 3) == 4


def test_scale_up_is_immediate_and_bounded_by_the_step():
    spec = make_spec(maxReplicas=50, scaleUp={"maxStep": 4})
    decision = decide(obs(2, backlog=30), PolicyState(), spec, NOW)
    assert (decision.desired, decision.reason) == (6, policy.SCALE_UP)
    assert decision.conditions["ScalingLimited"].reason == "StepLimited"


def test_scale_up_window_takes_the_lowest_recommendation_in_it():
    spec = make_spec(scaleUp={"stabilizationWindowSeconds": 10, "maxStep": 10})
    seen, _ = run(spec, [(1, 0)] * 10 + [(5, 0)] * 10, current=1)
    # the load rose at tick 10; 5 is used once the lower 1 has left the 10 s window
    assert seen[:15] == [1] * 15
    assert seen[15:] == [5] * 5


def test_clamped_to_max_and_min():
    spec = make_spec(minReplicas=2, maxReplicas=5)
    high = decide(obs(3, backlog=100), PolicyState(), spec, NOW)
    assert high.desired == 5 and high.conditions["ScalingLimited"].reason == "TooManyReplicas"
    low = decide(obs(0, backlog=0), PolicyState(), spec, NOW)
    assert (low.desired, low.reason) == (2, policy.BELOW_MINIMUM)
    above = decide(obs(9, backlog=100), warm(spec, 100), spec, NOW)
    assert (above.desired, above.reason) == (5, policy.ABOVE_MAXIMUM)


def test_scale_down_waits_for_the_window_then_steps():
    spec = make_spec(scaleDown={"stabilizationWindowSeconds": 30, "maxStep": 2})
    seen, _ = run(spec, [(8, 0)] * 5 + [(0, 0)] * 40, current=8)
    drop_at = seen.index(6)
    # the load fell at tick 5; nothing moved before the 30 s window had passed
    assert (drop_at - 5) * INTERVAL >= 30
    assert all(seen[i] - seen[i + 1] <= 2 for i in range(len(seen) - 1))


def test_scale_down_waits_for_a_complete_history():
    spec = make_spec(scaleDown={"stabilizationWindowSeconds": 30, "maxStep": 5})
    fresh = decide(obs(5, backlog=0), PolicyState(), spec, NOW)
    assert (fresh.desired, fresh.reason) == (5, policy.STABILIZING)


def test_to_zero_only_after_the_idle_delay():
    spec = make_spec(scaleDown={"stabilizationWindowSeconds": 0, "maxStep": 5}, idleDelaySeconds=60)
    seen, _ = run(spec, [(0, 0)] * 40, current=3, state=warm(spec, 0))
    first_zero = seen.index(0)
    assert seen[:first_zero] and all(v >= 1 for v in seen[:first_zero])
    assert first_zero * INTERVAL >= 60
    assert seen[first_zero - 1] == 1


def test_not_to_zero_while_a_job_is_in_flight_however_long():
    spec = make_spec(scaleDown={"stabilizationWindowSeconds": 0, "maxStep": 5}, idleDelaySeconds=0)
    seen, _ = run(spec, [(0, 1)] * 100, current=3, state=warm(spec, 0))
    assert min(seen) == 1


def test_from_zero_on_any_backlog_even_a_light_one():
    spec = make_spec(queues=[{"name": "cpu.low", "weight": 1e-6}], target={"backlogPerReplica": 1000})
    decision = decide(obs(0, backlog={"cpu.low": 1}), PolicyState(), spec, NOW)
    assert (decision.desired, decision.reason) == (1, policy.SCALE_FROM_ZERO)


def test_paused_queue_backlog_does_not_scale_up():
    spec = make_spec()
    decision = decide(obs(0, backlog={"cpu.normal": 50}, paused_queues=frozenset({"cpu.normal"})),
                      PolicyState(), spec, NOW)
    assert decision.desired == 0


def test_pin_wins_even_outside_min_max_and_without_redis():
    spec = make_spec(maxReplicas=3, pinnedReplicas=7)
    assert decide(obs(2, backlog=0), PolicyState(), spec, NOW).desired == 7
    blind = decide(Observation(current_replicas=2, **UNKNOWN), PolicyState(), spec, NOW)
    assert (blind.desired, blind.reason) == (7, policy.PINNED)


def test_pause_by_field_or_by_annotation():
    body = {"metadata": {"name": "p", "namespace": "n", "annotations": {"renderfarm.io/paused": "true"}},
            "spec": make_spec().wire()}
    assert WorkerPool.from_body(body).paused
    body["metadata"]["annotations"] = {}
    assert not WorkerPool.from_body(body).paused
    body["spec"]["paused"] = True
    assert WorkerPool.from_body(body).paused
    decision = decide(obs(1, backlog=500), PolicyState(), make_spec(), NOW, paused=True)
    assert decision.desired == 1


def test_redis_unreadable_keeps_the_size_and_is_never_read_as_zero():
    spec = make_spec(scaleDown={"stabilizationWindowSeconds": 0, "maxStep": 10}, idleDelaySeconds=0)
    state = warm(spec, 0)
    for tick in range(30):
        decision = decide(Observation(current_replicas=4, **UNKNOWN), state, spec, NOW + tick * INTERVAL)
        state = decision.state
        assert decision.desired == 4
        assert decision.conditions["BacklogUnknown"].status is True
        assert decision.conditions["Ready"].status is False
    # Back: the history restarts, so an empty queue read right after the outage
    # does not drop straight to zero (the idle delay starts counting now).
    spec_idle = make_spec(scaleDown={"stabilizationWindowSeconds": 0, "maxStep": 10}, idleDelaySeconds=30)
    back = decide(obs(4, backlog=0), state, spec_idle, NOW + 100)
    assert back.desired == 1 and back.conditions["BacklogUnknown"].status is False


def test_unschedulable_pods_stop_growth_but_not_shrinking():
    spec = make_spec(maxReplicas=10)
    grow = decide(obs(2, backlog=8, unschedulable=1), PolicyState(), spec, NOW)
    assert (grow.desired, grow.reason) == (2, policy.CAPACITY_LIMITED)
    assert grow.conditions["CapacityLimited"].status is True
    shrink = decide(obs(6, backlog=1, unschedulable=1), warm(spec, 1), spec, NOW)
    assert shrink.desired < 6


def test_scale_in_keeps_the_pods_running_jobs():
    spec = make_spec(target={"backlogPerReplica": 4}, scaleDown={"stabilizationWindowSeconds": 0, "maxStep": 10})
    # 6 jobs in flight on 6 pods, nothing waiting: 2 replicas would do, but 6 are busy
    decision = decide(obs(8, backlog=0, in_flight=6, busy_replicas=6), warm(spec, 0), spec, NOW)
    assert decision.desired == 6


def test_target_wait_uses_the_measured_throughput():
    spec = make_spec(target={"targetWaitSeconds": 60, "throughputPerReplica": 0.1}, maxReplicas=100)
    # 60 jobs waiting, 0.1 jobs/s per replica: 10 replicas clear them in 60 s
    assert recommend(spec, {"cpu.normal": 60}, 0) == 10
    # measured 0.5 jobs/s per replica: 2 replicas; arrivals of 0.5/s add one more
    assert recommend(spec, {"cpu.normal": 60}, 0, throughput_per_replica=0.5) == 2
    assert recommend(spec, {"cpu.normal": 60}, 0, throughput_per_replica=0.5, arrival_rate=0.5) == 3
    # throughput is learned while the pool is saturated
    decision = decide(obs(4, backlog=60, completion_rate=2.0), PolicyState(), spec, NOW)
    assert decision.state.throughput_per_replica == pytest.approx(0.5)


def test_restart_from_status_continues_without_a_jump():
    spec = make_spec(scaleDown={"stabilizationWindowSeconds": 60, "maxStep": 3})
    _, state = run(spec, [(9, 0)] * 10 + [(2, 0)] * 5, current=0)
    now = NOW + 15 * INTERVAL
    observation = obs(9, backlog=2)
    before = decide(observation, state, spec, now)
    status = build_status(previous=WorkerPoolStatus(), generation=1, selector="app=w", queue_names=CPU,
                          observation=observation, decision=before, current_replicas=9, now=now,
                          last_scale=None, in_flight_by_queue={})
    wire = WorkerPoolStatus.model_validate(status.model_dump(by_alias=True, mode="json"))
    restored = state_from_status(wire)
    after = decide(obs(9, backlog=2), restored, spec, now + INTERVAL)
    assert before.desired == after.desired == 9  # the 60 s window still holds 9
    assert restored.idle_since is None


# --- the spec model mirrors the CRD ---------------------------------------------------------


def test_spec_validation_matches_the_crd_rules():
    with pytest.raises(ValidationError):
        make_spec(minReplicas=5, maxReplicas=2)
    with pytest.raises(ValidationError):
        make_spec(target={"backlogPerReplica": 0})
    with pytest.raises(ValidationError):
        make_spec(target={"backlogPerReplica": 2, "targetWaitSeconds": 30})
    with pytest.raises(ValidationError):
        make_spec(queues=[{"name": "cpu.urgent"}])
    with pytest.raises(ValidationError):
        make_spec(queues=[{"name": "cpu.low", "weight": 0}])


def test_crd_defaults_equal_the_model_defaults():
    crd = yaml.safe_load((Path(__file__).resolve().parents[2] / "helm" / "renderfarm" / "crds" / "workerpool.yaml").read_text())
    version = crd["spec"]["versions"][0]
    props = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    model = WorkerPoolSpec(deployment="d", queues=[{"name": "cpu.low"}])
    assert props["minReplicas"]["default"] == model.min_replicas
    assert props["maxReplicas"]["default"] == model.max_replicas
    assert props["idleDelaySeconds"]["default"] == model.idle_delay_seconds
    assert props["target"]["default"] == model.target.wire()
    for name, rules in (("scaleUp", model.scale_up), ("scaleDown", model.scale_down)):
        assert props[name]["properties"]["stabilizationWindowSeconds"]["default"] == rules.stabilization_window_seconds
        assert props[name]["properties"]["maxStep"]["default"] == rules.max_step
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.pinnedReplicas"
    assert crd["spec"]["names"]["shortNames"] == ["wp"]


# --- the inputs the policy gets: queue reading, pods, leases (pure helpers and one real Redis) ----


def test_reader_counts_priority_sub_lists_and_in_flight_in_one_round_trip(redis_client):
    from renderfarm.core.queues import redis_list_keys
    from renderfarm.operator.queue_reader import QueueReader, busy_pods

    base, *subs = redis_list_keys("cpu.high")
    redis_client.lpush(base, "m1", "m2")
    redis_client.lpush(subs[0], "m3")
    redis_client.lpush(subs[2], "m4", "m5")
    redis_client.hset("rf:inflight:cpu.high", mapping={"j1": "cpu@pod-a", "j2": "cpu@pod-b"})
    redis_client.hset("rf:inflight:cpu.low", mapping={"j3": "cpu@pod-a"})
    redis_client.sadd("rf:paused", "cpu.low")
    redis_client.hset("rf:metrics:outcomes", mapping={"probe|cpu.high|succeeded": 7, "probe|cpu.high|failed": 1,
                                                      "probe|cpu.low|succeeded": 2})
    before = redis_client.info("stats")["total_commands_processed"]
    snapshot = QueueReader(redis_client).read(CPU)
    commands = redis_client.info("stats")["total_commands_processed"] - before - 1  # the INFO itself
    assert snapshot.ok and snapshot.round_trips == 1
    assert commands == len(CPU) * 5 + 2  # 4 LLEN + 1 HGETALL per queue, SMEMBERS, HGETALL
    assert snapshot.queues["cpu.high"].backlog == 5
    assert len(snapshot.queues["cpu.high"].in_flight) == 2
    assert snapshot.paused == {"cpu.low"}
    assert snapshot.completed() == {"cpu.high": 8, "cpu.low": 2}
    assert busy_pods(snapshot, CPU) == {"pod-a": 2, "pod-b": 1}


def test_reader_reports_unknown_never_zero_when_redis_is_gone():
    import redis as redis_lib

    from renderfarm.operator.queue_reader import QueueReader
    from tests.support.procs import free_port

    dead = redis_lib.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2, decode_responses=True)
    snapshot = QueueReader(dead).read(CPU)
    assert not snapshot.ok and not snapshot.knows(CPU) and "Connection" in snapshot.error


def test_a_queue_of_the_wrong_type_is_unknown_not_empty(redis_client):
    from renderfarm.operator.queue_reader import QueueReader

    redis_client.set("cpu.low", "not a list")
    snapshot = QueueReader(redis_client).read(CPU)
    assert snapshot.ok and "cpu.low" not in snapshot.queues and not snapshot.knows(CPU)
    assert snapshot.knows(["cpu.high"])


def test_rates_come_from_queue_and_outcome_deltas():
    from renderfarm.operator.queue_reader import QueueReading, RateTracker, Snapshot

    def snap(t, backlog, running, done):
        return Snapshot(taken_at=t, ok=True, queues={"cpu.high": QueueReading(backlog, {str(i): "cpu@p" for i in range(running)})},
                        outcomes={"probe|cpu.high|succeeded": done})

    tracker = RateTracker(time_constant_s=1e-9)  # no smoothing: the last interval's rate
    tracker.update(snap(0, 10, 2, 0))
    tracker.update(snap(2, 12, 2, 4))  # +2 waiting, 4 finished -> 6 arrived in 2 s
    assert tracker.pool_rates(["cpu.high"]) == pytest.approx((3.0, 2.0))
    tracker.update(Snapshot(taken_at=4, ok=False))  # a gap is not a burst
    tracker.update(snap(6, 100, 2, 4))
    assert tracker.pool_rates(["cpu.high"]) == pytest.approx((3.0, 2.0))


def test_pending_unschedulable_pods_are_counted_and_busy_pods_are_dear():
    from renderfarm.operator.pods import BUSY_COST, IDLE_COST, count_unschedulable, deletion_costs, pod_info

    def pod(name, phase="Running", reason=None, cost=None):
        conditions = [{"type": "PodScheduled", "status": "False", "reason": reason}] if reason else []
        annotations = {"controller.kubernetes.io/pod-deletion-cost": cost} if cost else {}
        return pod_info({"metadata": {"name": name, "annotations": annotations},
                         "status": {"phase": phase, "conditions": conditions}})

    pods = [pod("a"), pod("b", cost=str(IDLE_COST)), pod("c", "Pending", "Unschedulable"), pod("d", "Pending")]
    assert count_unschedulable(pods) == 1
    assert deletion_costs(pods, {"a": 2, "b": 1}) == {"a": str(BUSY_COST + 2), "b": str(BUSY_COST + 1),
                                                       "c": str(IDLE_COST), "d": str(IDLE_COST)}
    assert deletion_costs([pod("b", cost=str(IDLE_COST))], {}) == {}  # unchanged: not patched again


def test_lease_is_taken_only_when_free_or_silent_for_a_whole_duration():
    from renderfarm.operator.leader import LeaseRecord, lease_action

    other = LeaseRecord("other", "t1", 15, 0)
    assert lease_action(None, "me", 0, 0) == "create"
    assert lease_action(LeaseRecord("me", "t1", 15, 0), "me", 0, 100) == "renew"
    assert lease_action(other, "me", record_seen_since=100, now=110) == "wait"
    assert lease_action(other, "me", record_seen_since=100, now=115) == "acquire"
    assert lease_action(LeaseRecord("", "t1", 1, 0), "me", 100, 100) == "acquire"  # released


def test_two_operator_replicas_never_lead_at_the_same_time():
    import copy

    from kubernetes.client.rest import ApiException

    from renderfarm.operator.leader import LeaderElector

    class LeaseStore:  # the API server's optimistic concurrency on one Lease
        def __init__(self):
            self.lease, self.version = None, 0

        def get_lease(self, namespace, name):
            return copy.deepcopy(self.lease)

        def create_lease(self, namespace, lease):
            if self.lease is not None:
                raise ApiException(status=409, reason="AlreadyExists")
            self.version += 1
            lease.metadata.resource_version = str(self.version)
            self.lease = copy.deepcopy(lease)
            return lease

        def replace_lease(self, namespace, name, lease):
            if lease.metadata.resource_version != self.lease.metadata.resource_version:
                raise ApiException(status=409, reason="Conflict")
            self.version += 1
            lease.metadata.resource_version = str(self.version)
            self.lease = copy.deepcopy(lease)
            return lease

    clock = [0.0]
    store = LeaseStore()
    a = LeaderElector(store, "ns", "lease", "a", duration_s=15, clock=lambda: clock[0])
    b = LeaderElector(store, "ns", "lease", "b", duration_s=15, clock=lambda: clock[0])
    a_alive = True
    for step in range(120):
        clock[0] = step * 0.5
        if step == 40:
            a_alive = False  # a hangs (no renewals) without releasing
        if a_alive:
            a.tick()
        b.tick()
        assert not (a.is_leader and b.is_leader), f"two leaders at t={clock[0]}"
    assert b.is_leader and not a.is_leader
    b.release()
    assert a.tick()  # a released Lease is taken at once


@pytest.mark.parametrize(("selector", "matches"), [
    ("app=worker", True), ("app=other", False), ("app==worker,tier!=web", True),
    ("env in (a, b)", True), ("env notin (a)", False), ("gpu", True), ("!gpu", False), ("!legacy", True), ("", True),
])
def test_deployment_selectors_match_pods_like_the_api_server(selector, matches):
    from renderfarm.operator.pods import selector_matches

    assert selector_matches(selector, {"app": "worker", "env": "a", "gpu": ""}) is matches
