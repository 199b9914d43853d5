"""Pods of our own images on the local cluster's real node (kubelet + containerd + runc).

One small farm per module: a Redis pod (our Redis image), an API pod and a CPU
worker pod, each behind a Service, all restricted (non-root, read-only root
filesystem, no capabilities).  The tests check what kwok nodes cannot show:
the images start, probes pass, pods find each other through Services and
cluster DNS, `kubectl logs/exec` reach the kubelet, and a pod deleted with a
grace period gets SIGTERM and the worker shuts down warm.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import time
from typing import Any

import pytest

from localkube import LocalCluster
import realnode
from tests.support.realpods import apply, restricted_pod, service, wait_ready

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def farm(real_cluster: LocalCluster, built_images: dict[str, str]) -> dict[str, Any]:
    ns = "real-node-pods"
    real_cluster.kubectl("create", "namespace", ns, check=True)
    env = {"RF_REDIS_URL": "redis://redis:6379/0", "RF_DATA_DIR": "/data"}
    t0 = time.monotonic()
    apply(real_cluster, ns,
          restricted_pod("redis", built_images["REDIS_IMAGE"], args=["--dir", "/data", "--protected-mode", "no"],
                         port=6379, run_as=999),
          service("redis", 6379),
          restricted_pod("api", built_images["API_IMAGE"], env=env, port=8000, readiness_path="/readyz"),
          service("api", 8000),
          restricted_pod("worker", built_images["WORKER_IMAGE"], env=env,
                         args=["--pool", "cpu", "--concurrency", "1"], grace_seconds=30))
    ready_s = {}
    for name in ("redis", "api", "worker"):
        wait_ready(real_cluster, ns, name, timeout=180)
        ready_s[name] = round(time.monotonic() - t0, 2)
    yield {"namespace": ns, "ready_seconds": ready_s}
    real_cluster.kubectl("delete", "namespace", ns, "--wait=false")


def pod(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.kubectl_json("get", "pod", name, "-n", ns)


def test_pods_run_on_the_real_node_with_pod_network_addresses(real_cluster: LocalCluster, farm) -> None:
    ns = farm["namespace"]
    print(f"pods Ready after (s): {farm['ready_seconds']}")
    for name in ("redis", "api", "worker"):
        p = pod(real_cluster, ns, name)
        assert p["spec"]["nodeName"] == realnode.NODE_NAME
        assert ipaddress.ip_address(p["status"]["podIP"]) in ipaddress.ip_network(realnode.POD_CIDR)
        status = p["status"]["containerStatuses"][0]
        assert status["ready"] and status["restartCount"] == 0, status
        # the image really ran (a kwok pod has no container id)
        assert status["containerID"].startswith("containerd://")
    node = real_cluster.kubectl_json("get", "node", realnode.NODE_NAME)
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == realnode.NODE_IP
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")


def test_exec_reaches_the_api_through_its_service_by_dns_name(real_cluster: LocalCluster, farm) -> None:
    ns = farm["namespace"]
    script = ("import json, urllib.request as u; "
              f"r = u.urlopen('http://api.{ns}.svc.cluster.local:8000/readyz', timeout=10); "
              "print(r.status); "
              "print(u.urlopen('http://api:8000/healthz', timeout=10).read().decode())")
    proc = real_cluster.kubectl("exec", "-n", ns, "worker", "--", "python", "-c", script, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "200", proc.stdout
    assert json.loads(lines[1])  # the API's own answer, through the Service


def test_exec_runs_as_non_root_on_a_read_only_root(real_cluster: LocalCluster, farm) -> None:
    ns = farm["namespace"]
    proc = real_cluster.kubectl("exec", "-n", ns, "api", "--", "python", "-c",
                                "import os\ntry:\n open('/opt/x','w')\nexcept OSError as e:\n print('ro', e.errno)\n"
                                "open('/tmp/x','w').write('ok'); print(os.getuid())", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ro", "30", "10001"], proc.stdout  # EROFS, then uid 10001


def test_logs_show_the_worker_connected_to_redis_through_its_service(real_cluster: LocalCluster, farm) -> None:
    ns = farm["namespace"]
    deadline = time.monotonic() + 60
    logs = ""
    while time.monotonic() < deadline:
        logs = real_cluster.kubectl("logs", "-n", ns, "worker").stdout
        if " ready." in logs:
            break
        time.sleep(0.5)
    # celery masks the (empty) password: "Connected to redis://:**@redis:6379/0"
    assert re.search(r"Connected to redis://(\S*@)?redis:6379/0", logs), logs[-3000:]
    assert " ready." in logs, logs[-3000:]  # celery@<host> ready: the broker connection is up
    api_logs = real_cluster.kubectl("logs", "-n", ns, "api").stdout
    assert "GET /readyz" in api_logs, api_logs[-2000:]  # the kubelet's probes reached uvicorn


def test_deleting_the_worker_pod_sends_sigterm_and_it_shuts_down_warm(real_cluster: LocalCluster, farm) -> None:
    ns = farm["namespace"]
    follow = subprocess.Popen(
        [str(real_cluster.bin_dir / "kubectl"), f"--kubeconfig={real_cluster.kubeconfig}", "logs", "-f",
         "-n", ns, "worker", "--since=1s"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1.0)  # the stream is attached
        t0 = time.monotonic()
        real_cluster.kubectl("delete", "pod", "worker", "-n", ns, "--grace-period=30", "--wait=false", check=True)
        out = []
        for line in follow.stdout:  # type: ignore[union-attr]  # ends when the container exits
            out.append(line)
            if time.monotonic() - t0 > 40:
                break
        took = time.monotonic() - t0
    finally:
        follow.kill()
        follow.wait()
    text = "".join(out)
    assert "Warm shutdown" in text, text[-3000:]
    # well inside the grace period: SIGTERM, not the SIGKILL that ends it
    assert took < 25, f"{took:.1f}s"
    print(f"delete -> container exit: {took:.1f}s")
