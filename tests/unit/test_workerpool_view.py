"""The API's pure view of WorkerPools: summary, merge patch, bounds check."""

from __future__ import annotations

import pytest

from renderfarm.core.workerpools import check_bounds, pool_summary, spec_patch

BODY = {
    "metadata": {"name": "cpu", "annotations": {}},
    "spec": {"deployment": "rf-worker-cpu", "queues": [{"name": "cpu.critical", "weight": 2}, {"name": "cpu.low"}],
             "minReplicas": 1, "maxReplicas": 8, "pinnedReplicas": 3},
    "status": {"desiredReplicas": 3, "currentReplicas": 2, "backlog": 7, "inFlight": 2,
               "lastScaleReason": "pinned", "conditions": [{"type": "Ready", "status": "True", "reason": "Scaled"}]},
}


def test_summary_reads_spec_and_status():
    pool = pool_summary(BODY)
    assert pool["name"] == "cpu" and pool["queues"] == ["cpu.critical", "cpu.low"]
    assert (pool["min_replicas"], pool["max_replicas"], pool["pinned_replicas"]) == (1, 8, 3)
    assert (pool["desired_replicas"], pool["current_replicas"], pool["backlog"], pool["in_flight"]) == (3, 2, 7, 2)
    assert pool["conditions"][0]["type"] == "Ready" and pool["paused"] is False
    assert set(pool["conditions"][0]) == {"type", "status", "reason", "message", "last_transition_time"}


def test_summary_of_a_new_pool_has_crd_defaults_and_no_status():
    pool = pool_summary({"metadata": {"name": "x"}, "spec": {"deployment": "d", "queues": []}})
    assert (pool["min_replicas"], pool["max_replicas"], pool["pinned_replicas"]) == (0, 10, None)
    assert pool["desired_replicas"] is None and pool["conditions"] == []


@pytest.mark.parametrize("value, paused", [("true", True), ("TRUE ", True), ("false", False), ("", False)])
def test_the_pause_annotation_counts_like_the_spec_field(value, paused):
    body = {**BODY, "metadata": {"name": "cpu", "annotations": {"renderfarm.io/paused": value}}}
    assert pool_summary(body)["paused"] is paused


def test_patch_is_camel_case_and_null_clears_the_pin():
    assert spec_patch({"max_replicas": 4, "pinned_replicas": None}) == {"spec": {"maxReplicas": 4, "pinnedReplicas": None}}
    assert spec_patch({"paused": True}) == {"spec": {"paused": True}}
    with pytest.raises(ValueError):
        spec_patch({"replicas": 3})


def test_bounds_are_checked_against_the_current_spec():
    spec = {"minReplicas": 2, "maxReplicas": 5}
    assert check_bounds(spec, {"max_replicas": 1}) is not None
    assert check_bounds(spec, {"min_replicas": 6}) is not None
    assert check_bounds(spec, {"min_replicas": 5}) is None
    assert check_bounds(spec, {"min_replicas": 0, "max_replicas": 1}) is None


def test_the_api_loads_neither_the_worker_nor_the_operator_nor_the_kubernetes_client():
    # Dependencies point inward (api -> core); the Kubernetes client is loaded only
    # when /v1/pools is first used on Kubernetes.
    import subprocess
    import sys

    code = ("import sys, renderfarm.api.app; "
            "print(sorted(m for m in sys.modules if m.startswith(('renderfarm.worker', 'renderfarm.operator', "
            "'kubernetes', 'kopf'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
