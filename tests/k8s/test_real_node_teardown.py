"""The real node leaves the host as it was, even when its owner is SIGKILLed.

A child process starts a cluster with the real node and one pod on it, then is
killed with SIGKILL (no atexit, no finally).  The node's guardian must then stop
containerd's shims and the containers, and undo the mounts, network namespaces,
links, iptables chains and rules, sysctls (ip_forward), cgroups and kubelet's,
containerd's and CNI's folders.  The normal stop() path is checked by the
`real_cluster` fixture, which compares the same snapshot after the session.

These tests run before any test that uses `real_cluster` (conftest orders them):
there is one real node per host.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import hoststate
import realnode

pytestmark = [pytest.mark.timeout(400), pytest.mark.real_node_teardown]

REPO_ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {k8s_dev!r}); sys.path.insert(0, {root!r})
    from localkube import LocalCluster
    from tests.support.realpods import apply, restricted_pod, service, wait_ready
    c = LocalCluster(real_node=True, images=[{image!r}]).start()
    apply(c, "default", restricted_pod("redis", {image!r}, args=["--dir", "/data"], port=6379, run_as=999),
          service("redis", 6379))
    wait_ready(c, "default", "redis", timeout=120)
    print(json.dumps({{"workdir": str(c.workdir), "timings": c.timings, "node": c.node.timings}}), flush=True)
    time.sleep(3600)
""")


def _markers(workdir: str) -> list[int]:
    return realnode._processes_matching([workdir + "/"])


def test_sigkilled_owner_leaves_nothing_behind(k8s_tools: Path, built_images: dict[str, str]) -> None:
    assert realnode.read_state() is None, "a real node is running already"
    before = hoststate.snapshot()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(k8s_dev=str(REPO_ROOT / "k8s" / "dev"), root=str(REPO_ROOT),
                                            image=built_images["REDIS_IMAGE"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = child.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("{"), f"child failed: {line}{child.stderr.read()[-4000:]}"  # type: ignore[union-attr]
        import json

        info = json.loads(line)
        print(f"cluster timings {info['timings']}, node {info['node']}")
        during = hoststate.differences(before)
        # the snapshot sees what a running node changes (else this test proves nothing)
        kinds = {d.split()[0] for d in during}
        assert {"mounts", "netns", "links", "cgroups"} <= kinds, during
        assert any(d.startswith("iptables -t nat added") for d in during), during
        assert _markers(info["workdir"]), "no node processes seen"
        t0 = time.monotonic()
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        deadline = time.monotonic() + 90
        while realnode.read_state() is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        took = time.monotonic() - t0
        assert realnode.read_state() is None, "the guardian did not tear the node down"
        print(f"guardian teardown after SIGKILL: {took:.1f}s")
        assert _markers(info["workdir"]) == [], "processes (shims, kubelet, containerd) left"
        assert hoststate.differences(before) == []
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
