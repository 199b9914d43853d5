"""/v1/pools without Kubernetes (make run): a clear 501, after authentication."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from renderfarm.api.app import create_app
from renderfarm.core.settings import Settings

KEY = "pools-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def client(redis_server, data_dir):
    settings = Settings(redis_url=redis_server.url, data_dir=data_dir, api_keys=[KEY])
    assert settings.pools_namespace == ""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_pools_answer_501_with_a_message_when_not_on_kubernetes(client):
    for response in (client.get("/v1/pools", headers=AUTH),
                     client.patch("/v1/pools/cpu", json={"max_replicas": 3}, headers=AUTH)):
        assert response.status_code == 501, response.text
        error = response.json()["error"]
        assert error["code"] == "not_on_kubernetes"
        assert "RF_POOLS_NAMESPACE" in error["message"] and "/v1/workers" in error["message"]


def test_pools_need_a_key_before_anything_else(client):
    assert client.get("/v1/pools").status_code == 401
    assert client.patch("/v1/pools/cpu", json={"max_replicas": 3}).status_code == 401


def test_cli_pools_says_why_without_kubernetes(rf_settings_env):
    from typer.testing import CliRunner

    from renderfarm.cli import app as cli_app
    from tests.support.procs import start_api

    api, base = start_api(dict(rf_settings_env, RF_API_KEYS=KEY))
    try:
        env = {"RF_API_URL": base, "RF_API_KEY": KEY, "COLUMNS": "200"}
        for args in (["pools"], ["pool", "set", "cpu", "--max", "3"]):
            result = CliRunner().invoke(cli_app, args, env=env)
            assert result.exit_code == 2, result.output
            assert "not_on_kubernetes, HTTP 501" in result.output and "RF_POOLS_NAMESPACE" in result.output
    finally:
        api.stop()
