"""Session-wide real services: one redis-server per test session (flushed per test)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.procs import RedisServer, rf_env


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server):
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def data_dir(tmp_path) -> Path:
    (tmp_path / "data" / "inputs").mkdir(parents=True)
    return tmp_path / "data"


@pytest.fixture
def rf_settings_env(redis_server, redis_client, data_dir, monkeypatch):
    """RF_* variables for processes the test starts, and for in-process code."""
    env = rf_env(redis_server.url, data_dir)
    for key, value in env.items():
        if key.startswith("RF_"):
            monkeypatch.setenv(key, value)
    from renderfarm.core.settings import get_settings

    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (SeaweedFS ``weed server -s3``, built by ``make
    s3-tools``) on free ports, with the farm's output bucket and an input bucket."""
    from renderfarm.cli.s3server import WeedS3

    server = WeedS3(tmp_path_factory.mktemp("weed"), access_key="rf-test-key", secret_key="rf-test-secret-0123456789",
                    buckets=["rf-media", "rf-inputs", "rf-private"]).start()
    yield server
    server.stop()
