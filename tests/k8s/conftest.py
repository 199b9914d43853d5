"""Fixtures for tests against a real local Kubernetes (k8s/dev/localkube.py).

Fixtures:
    k8s_tools      (session) bin dir of the cached, pinned binaries (built if missing)
    local_cluster  (session) a started LocalCluster, stopped at the end of the session
    kubectl        (session) the cluster's kubectl: kubectl("get", "pods", check=True)
    namespace      (function) a fresh namespace, deleted after the test

A cold tool build (~11 min on 2 cores) runs once, after collection and outside
any test timeout, when a collected test uses these fixtures; `make k8s-tools`
does the same ahead of time.
"""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DEV = REPO_ROOT / "k8s" / "dev"
if str(K8S_DEV) not in sys.path:
    sys.path.insert(0, str(K8S_DEV))

from localkube import LocalCluster, ensure_tools, tools_ready, _pid_alive  # noqa: E402

CHARTS = Path(__file__).resolve().parent / "charts"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Build the tools before the first test (not under pytest-timeout), with output shown."""
    if tools_ready():
        return
    if not any("k8s_tools" in getattr(item, "fixturenames", ()) for item in items):
        return
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            ensure_tools()
    else:
        ensure_tools()


@pytest.fixture(scope="session")
def k8s_tools() -> Path:
    return ensure_tools()


@pytest.fixture(scope="session")
def local_cluster(k8s_tools: Path):
    cluster = LocalCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        pids = cluster.pids
        workdir = cluster.workdir
        cluster.stop()
    left = {name: pid for name, pid in pids.items() if _pid_alive(pid)}
    assert not left, f"processes left behind after stop(): {left}"
    assert workdir is None or not workdir.exists(), f"{workdir} not removed"


@pytest.fixture(scope="session")
def kubectl(local_cluster: LocalCluster):
    return local_cluster.kubectl


_ns_counter = itertools.count()


@pytest.fixture
def namespace(local_cluster: LocalCluster, request: pytest.FixtureRequest):
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t{next(_ns_counter)}-{base}"
    local_cluster.kubectl("create", "namespace", name, check=True)
    yield name
    local_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
