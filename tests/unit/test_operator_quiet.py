"""The operator's steady state sends nothing: pure parts and the shell's write rules."""

from __future__ import annotations

import copy

from kubernetes.client.rest import ApiException

from renderfarm.operator.informer import deployment_scale, format_selector
from renderfarm.operator.leader import LeaderElector
from renderfarm.operator.pods import selector_matches


def test_a_deployment_gives_the_scale_subresource_answer():
    selector = {"matchLabels": {"app": "w", "tier": "gpu"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["b", "a"]},
                                     {"key": "legacy", "operator": "DoesNotExist"},
                                     {"key": "zone", "operator": "NotIn", "values": ["x"]},
                                     {"key": "gpu", "operator": "Exists"}]}
    text = format_selector(selector)
    assert text == "app=w,tier=gpu,env in (a,b),!legacy,zone notin (x),gpu"
    assert selector_matches(text, {"app": "w", "tier": "gpu", "env": "a", "gpu": "", "zone": "y"})
    assert not selector_matches(text, {"app": "w", "tier": "gpu", "env": "a", "gpu": "", "legacy": "1"})
    scale = deployment_scale({"spec": {"replicas": 3, "selector": {"matchLabels": {"app": "w"}}},
                              "status": {"replicas": 2}})
    assert (scale.replicas, scale.status_replicas, scale.selector) == (3, 2, "app=w")
    assert deployment_scale({"spec": {}}).replicas == 1  # the API server's default


class CountingLeaseStore:
    """The API server's optimistic concurrency on one Lease, counting requests."""

    def __init__(self):
        self.lease, self.version, self.requests = None, 0, []

    def get_lease(self, namespace, name):
        self.requests.append("get")
        return copy.deepcopy(self.lease)

    def create_lease(self, namespace, lease):
        self.requests.append("create")
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(lease)

    def replace_lease(self, namespace, name, lease):
        self.requests.append("update")
        if lease.metadata.resource_version != self.lease.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(lease)

    def _store(self, lease):
        self.version += 1
        lease.metadata.resource_version = str(self.version)
        self.lease = copy.deepcopy(lease)
        return copy.deepcopy(lease)


def test_a_steady_leader_renews_every_third_of_the_lease_without_reading_it():
    clock = [0.0]
    store = CountingLeaseStore()
    elector = LeaderElector(store, "ns", "lease", "me", duration_s=15, clock=lambda: clock[0])
    for step in range(31):  # 60 s of 2 s ticks
        clock[0] = step * 2.0
        assert elector.tick()
    assert store.requests[0] == "get" and store.requests[1] == "create"
    renewals = store.requests[2:]
    assert set(renewals) == {"update"}, renewals  # no GET while leading
    assert len(renewals) <= 60 / 5, renewals


def test_a_leader_whose_lease_was_taken_reads_it_again_and_stops_leading():
    clock = [0.0]
    store = CountingLeaseStore()
    me = LeaderElector(store, "ns", "lease", "me", duration_s=15, clock=lambda: clock[0])
    assert me.tick()
    # Someone else writes the Lease (an admin, a partitioned peer): our cached copy is stale.
    taken = copy.deepcopy(store.lease)
    taken.spec.holder_identity = "other"
    store._store(taken)
    clock[0] = 6.0
    me.tick()  # the renewal fails with 409
    clock[0] = 8.0
    assert not me.tick()  # read again: someone else holds it
    assert store.requests[-1] == "get"


def test_an_unchanged_status_is_rewritten_only_as_a_heartbeat():
    from renderfarm.operator.controller import Controller, PoolMemory
    from renderfarm.operator.metrics import OperatorMetrics
    from renderfarm.operator.models import WorkerPoolStatus
    from renderfarm.operator.policy import PolicyState
    from renderfarm.operator.status import material, volatile

    controller = Controller(None, OperatorMetrics(), view=object(), status_refresh_s=10, status_heartbeat_s=300)
    written = WorkerPoolStatus(desired_replicas=2, current_replicas=2, backlog=2, arrival_rate=0.0)
    memory = PoolMemory(state=PolicyState(), status=written, written_material=material(written),
                        written_volatile=volatile(written), written_at=1000.0)

    def due(status, now):
        return controller._status_due(memory, status, material(status), now)

    assert not due(written, 1002.0)
    assert not due(written, 1299.0)
    assert due(written, 1300.0)  # heartbeat
    moved = written.model_copy(update={"arrival_rate": 0.5})
    assert not due(moved, 1005.0) and due(moved, 1010.0)  # rates: at most every refresh
    # A decaying tail (0.004 jobs/s left of a burst) is not worth a write before the heartbeat.
    assert not due(written.model_copy(update={"arrival_rate": 0.004}), 1100.0)
    assert due(written.model_copy(update={"arrival_rate": None}), 1001.0)  # known -> unknown: at once
    assert due(written.model_copy(update={"desired_replicas": 3}), 1000.5)  # material: at once
