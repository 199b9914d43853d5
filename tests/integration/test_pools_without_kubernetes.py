"""/v1/pools without Kubernetes (make run): the local pools, read-only, after authentication."""

from __future__ import annotations

import httpx
from typer.testing import CliRunner

from renderfarm.cli import app as cli_app
from renderfarm.core.apikeys import Scope, create_api_key
from renderfarm.core.queues import WorkloadClass
from tests.support.procs import start_api, start_worker

KEY = "pools-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


def test_local_pools_are_shown_read_only_and_patch_says_why(rf_settings_env, redis_client):
    api, base = start_api(dict(rf_settings_env, RF_API_KEYS=KEY))
    worker = start_worker(rf_settings_env, pool="cpu")
    try:
        pools = {pool["name"]: pool for pool in httpx.get(f"{base}/v1/pools", headers=AUTH, timeout=5).json()}
        assert set(pools) == {pool.value for pool in WorkloadClass}
        cpu = pools["cpu"]
        assert cpu["current_replicas"] == 1 and pools["gpu-vision"]["current_replicas"] == 0
        assert cpu["queues"] == ["cpu.critical", "cpu.high", "cpu.normal", "cpu.low"]
        assert cpu["conditions"][0]["type"] == "ReadOnly" and "RF_POOLS_NAMESPACE" in cpu["conditions"][0]["message"]

        response = httpx.patch(f"{base}/v1/pools/cpu", json={"max_replicas": 3}, headers=AUTH, timeout=5)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "pools_read_only"

        # Reading takes any key; steering needs admin, which is checked first.
        jobs_only = {"Authorization": f"Bearer {create_api_key(redis_client, 'pools-tenant', {Scope.jobs})}"}
        assert httpx.get(f"{base}/v1/pools", headers=jobs_only, timeout=5).status_code == 200
        assert httpx.patch(f"{base}/v1/pools/cpu", json={"max_replicas": 3}, headers=jobs_only,
                           timeout=5).status_code == 403
        assert httpx.get(f"{base}/v1/pools", timeout=5).status_code == 401
        assert httpx.patch(f"{base}/v1/pools/cpu", json={"max_replicas": 3}, timeout=5).status_code == 401

        env = {"RF_API_URL": base, "RF_API_KEY": KEY, "COLUMNS": "200"}
        listed = CliRunner().invoke(cli_app, ["pools"], env=env)
        assert listed.exit_code == 0 and "gpu-transcribe" in listed.output, listed.output
        refused = CliRunner().invoke(cli_app, ["pool", "set", "cpu", "--max", "3"], env=env)
        assert refused.exit_code == 2 and "pools_read_only, HTTP 409" in refused.output, refused.output
    finally:
        worker.stop()
        api.stop()
