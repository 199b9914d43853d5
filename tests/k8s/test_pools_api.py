"""GET/PATCH /v1/pools and `renderfarm pools` / `renderfarm pool set` against the real local
Kubernetes API, with real WorkerPool objects, as the chart's API ServiceAccount (never as admin)."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from renderfarm.cli import app as cli_app
from tests.k8s.operator_fixtures import workerpool_crd  # noqa: F401  (fixture)
from tests.support.chart import helm_template
from tests.support.procs import rf_env, start_api

KEY = "pools-k8s-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
API_SA = "renderfarm-api"


def _pool(name: str, minimum: int, maximum: int) -> dict:
    return {"apiVersion": "renderfarm.io/v1alpha1", "kind": "WorkerPool", "metadata": {"name": name},
            "spec": {"deployment": f"renderfarm-worker-{name}", "queues": [{"name": f"{name}.high"}, {"name": f"{name}.low"}],
                     "minReplicas": minimum, "maxReplicas": maximum}}


@pytest.fixture
def pools_api(local_cluster, workerpool_crd, namespace, redis_server, tmp_path):  # noqa: F811
    """(base URL, kubectl get wp) of a real API process reading this namespace's WorkerPools as the chart's API SA."""
    rendered = helm_template(local_cluster.bin_dir / "helm", "--show-only", "templates/api.yaml", namespace=namespace)
    rbac = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    assert len(rbac) == 3
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(rbac), check=True)
    local_cluster.kubectl("apply", "-n", namespace, "-f", "-", check=True,
                          input=json.dumps({"apiVersion": "v1", "kind": "List",
                                            "items": [_pool("cpu", 1, 8), _pool("gpu-vision", 0, 2)]}))
    # What the operator would have reported (status is the operator's; the API only reads it).
    local_cluster.kubectl("patch", "wp", "cpu", "-n", namespace, "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": {"desiredReplicas": 3, "currentReplicas": 2, "backlog": 5,
                                                       "inFlight": 2, "lastScaleReason": "backlog 5 + in-flight 2",
                                                       "conditions": [{"type": "Ready", "status": "True",
                                                                       "reason": "Scaled", "message": "ok"}]}}),
                          check=True)
    kubeconfig = local_cluster.serviceaccount_kubeconfig(namespace, API_SA)
    (tmp_path / "data" / "inputs").mkdir(parents=True)
    env = rf_env(redis_server.url, tmp_path / "data", RF_API_KEYS=KEY, RF_POOLS_NAMESPACE=namespace,
                 RF_KUBECONFIG=str(kubeconfig))
    api, base = start_api(env)

    def wp(name: str) -> dict:
        return local_cluster.kubectl_json("get", "wp", name, "-n", namespace)

    try:
        yield base, wp
    finally:
        api.stop()


def test_get_pools_reads_spec_and_status_of_every_workerpool(pools_api):
    base, _ = pools_api
    response = httpx.get(f"{base}/v1/pools", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    pools = {pool["name"]: pool for pool in response.json()}
    assert sorted(pools) == ["cpu", "gpu-vision"]
    cpu = pools["cpu"]
    assert (cpu["min_replicas"], cpu["max_replicas"], cpu["pinned_replicas"], cpu["paused"]) == (1, 8, None, False)
    assert (cpu["desired_replicas"], cpu["current_replicas"], cpu["backlog"], cpu["in_flight"]) == (3, 2, 5, 2)
    assert cpu["conditions"][0]["type"] == "Ready" and cpu["queues"] == ["cpu.high", "cpu.low"]
    assert pools["gpu-vision"]["desired_replicas"] is None  # no status yet


def test_patch_writes_the_workerpool_and_a_null_pin_resumes_autoscaling(pools_api):
    base, wp = pools_api
    response = httpx.patch(f"{base}/v1/pools/cpu", headers=AUTH, json={"max_replicas": 4, "pinned_replicas": 3},
                           timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["max_replicas"] == 4 and response.json()["pinned_replicas"] == 3
    spec = wp("cpu")["spec"]
    assert spec["maxReplicas"] == 4 and spec["pinnedReplicas"] == 3 and spec["minReplicas"] == 1

    response = httpx.patch(f"{base}/v1/pools/cpu", headers=AUTH, json={"pinned_replicas": None, "paused": True},
                           timeout=10)
    assert response.status_code == 200, response.text
    spec = wp("cpu")["spec"]
    assert "pinnedReplicas" not in spec and spec["paused"] is True


def test_patch_refuses_min_above_max_and_unknown_pools(pools_api):
    base, wp = pools_api
    response = httpx.patch(f"{base}/v1/pools/cpu", headers=AUTH, json={"min_replicas": 9}, timeout=10)
    assert response.status_code == 422 and "max_replicas" in response.json()["error"]["message"]
    assert wp("cpu")["spec"]["minReplicas"] == 1
    response = httpx.patch(f"{base}/v1/pools/gpu-audio", headers=AUTH, json={"max_replicas": 2}, timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = httpx.patch(f"{base}/v1/pools/cpu", headers=AUTH, json={"replicas": 2}, timeout=10)
    assert response.status_code == 422
    assert httpx.patch(f"{base}/v1/pools/cpu", json={"max_replicas": 2}, timeout=10).status_code == 401


def test_the_api_service_account_may_patch_workerpools_and_nothing_else(local_cluster, pools_api, namespace):
    who = f"--as=system:serviceaccount:{namespace}:{API_SA}"

    def can(*args: str) -> bool:
        return local_cluster.kubectl("auth", "can-i", *args, "-n", namespace, who).stdout.strip() == "yes"

    assert can("patch", "workerpools.renderfarm.io") and can("list", "workerpools.renderfarm.io")
    assert not can("patch", "workerpools.renderfarm.io", "--subresource=status")
    assert not can("patch", "deployments") and not can("patch", "deployments", "--subresource=scale")
    assert not can("get", "secrets") and not can("delete", "workerpools.renderfarm.io")


def test_cli_pools_and_pool_set(pools_api):
    base, wp = pools_api
    env = {"RF_API_URL": base, "RF_API_KEY": KEY, "COLUMNS": "200"}
    result = CliRunner().invoke(cli_app, ["pools"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    line = next(row for row in result.output.splitlines() if row.startswith("cpu "))
    assert line.split()[:8] == ["cpu", "1", "8", "-", "3", "2", "5", "2"] and "Ready" in line

    result = CliRunner().invoke(cli_app, ["pool", "set", "gpu-vision", "--max", "3", "--pin", "1", "--pause"],
                                env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    spec = wp("gpu-vision")["spec"]
    assert (spec["maxReplicas"], spec["pinnedReplicas"], spec["paused"]) == (3, 1, True)
    result = CliRunner().invoke(cli_app, ["pool", "set", "gpu-vision", "--unpin", "--resume"], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    spec = wp("gpu-vision")["spec"]
    assert "pinnedReplicas" not in spec and spec["paused"] is False

    result = CliRunner().invoke(cli_app, ["pool", "set", "cpu", "--min", "9"], env=env)
    assert result.exit_code == 2 and "max_replicas" in result.output
