"""Fixtures for tests against a real local Kubernetes (k8s/dev/localkube.py).

Fixtures:
    k8s_tools      (session) bin dir of the cached, pinned binaries (built if missing)
    local_cluster  (session) a started LocalCluster, stopped at the end of the session
    kubectl        (session) the cluster's kubectl: kubectl("get", "pods", check=True)
    namespace      (function) a fresh namespace, deleted after the test
    built_images   (session) {"API_IMAGE": ..., "WORKER_IMAGE": ..., "REDIS_IMAGE": ...}
                   from build/images.env (`make images`; built here if missing)
    real_cluster   (session) a LocalCluster with a real node (kubelet + containerd,
                   realnode.py) and the simulated GPU nodes, the images imported;
                   its teardown must leave the host as it was
    real_namespace (function) a fresh namespace in real_cluster

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

from localkube import LocalCluster, ensure_tools, read_images_env, tools_ready, _pid_alive  # noqa: E402
import hoststate  # noqa: E402
import realnode  # noqa: E402

CHARTS = Path(__file__).resolve().parent / "charts"


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run the real-node teardown tests before anything starts the session's real
    node (one per host); build the tools before the first test (not under
    pytest-timeout), with output shown."""
    first = [i for i in items if i.get_closest_marker("real_node_teardown")]
    if first:
        items[:] = first + [i for i in items if not i.get_closest_marker("real_node_teardown")]
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


BUILD_IMAGES = K8S_DEV / "build-images.sh"
IMAGES_ENV = REPO_ROOT / "build" / "images.env"
IMAGE_KEYS = ("API_IMAGE", "WORKER_IMAGE", "REDIS_IMAGE")


@pytest.fixture(scope="session")
def built_images() -> dict[str, str]:
    """The images of `make images` (build-images.sh is a fast no-op when they exist)."""
    import subprocess

    proc = subprocess.run(["bash", str(BUILD_IMAGES)], capture_output=True, text=True)
    assert proc.returncode == 0, f"build-images.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    images = read_images_env(IMAGES_ENV)
    missing = [k for k in IMAGE_KEYS if not images.get(k)]
    assert not missing, f"{IMAGES_ENV} lacks {missing}"
    return {k: images[k] for k in IMAGE_KEYS}


@pytest.fixture(scope="session")
def real_cluster(k8s_tools: Path, built_images: dict[str, str]):
    before = hoststate.snapshot()
    cluster = LocalCluster(real_node=True, images=built_images.values())
    try:
        cluster.start()
        yield cluster
    finally:
        pids = cluster.pids
        cluster.stop()
    left = {name: pid for name, pid in pids.items() if _pid_alive(pid)}
    assert not left, f"processes left behind after stop(): {left}"
    assert cluster.node_left == [], f"the real node's teardown left: {cluster.node_left}"
    assert hoststate.differences(before) == []
    assert realnode.read_state() is None


@pytest.fixture
def real_namespace(real_cluster: LocalCluster, request: pytest.FixtureRequest):
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"r{next(_ns_counter)}-{base}"
    real_cluster.kubectl("create", "namespace", name, check=True)
    yield name
    real_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")
