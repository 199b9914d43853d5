"""Smoke tests of the local Kubernetes (k8s/dev/localkube.py), all through the real binaries."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest

# localkube is importable: tests/k8s/conftest.py puts k8s/dev on sys.path
from localkube import LocalCluster, _pid_alive, versions
from tests.support.procs import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DEV = REPO_ROOT / "k8s" / "dev"
CHARTS = Path(__file__).resolve().parent / "charts"

CPU_NODES = {"rf-cpu-0"}
GPU_NODES = {"rf-gpu-0", "rf-gpu-1"}


def is_ready(node: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))


def apply(cluster: LocalCluster, namespace: str | None, obj: dict[str, Any], **kw: Any) -> None:
    args = ["apply", "-f", "-"] + (["-n", namespace] if namespace else [])
    cluster.kubectl(*args, input=json.dumps(obj), check=True, **kw)


def deployment(name: str, replicas: int, pod_spec_extra: dict[str, Any] | None = None,
               resources: dict[str, Any] | None = None) -> dict[str, Any]:
    container = {"name": "main", "image": "registry.invalid/renderfarm/test:0"}
    if resources:
        container["resources"] = resources
    spec = {"containers": [container], **(pod_spec_extra or {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


# --------------------------------------------------------------------------


def test_nodes_are_simulated_cpu_and_gpu_nodes_all_ready(local_cluster: LocalCluster) -> None:
    nodes = local_cluster.kubectl_json("get", "nodes")["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(by_name) == CPU_NODES | GPU_NODES
    not_ready = [name for name, n in by_name.items() if not is_ready(n)]
    assert not not_ready, f"nodes not Ready: {not_ready}"
    for name, n in by_name.items():
        assert n["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"
        assert n["metadata"]["labels"]["type"] == "kwok"
    for name in GPU_NODES:
        n = by_name[name]
        assert n["status"]["allocatable"]["nvidia.com/gpu"] == "1"
        assert n["status"]["capacity"]["nvidia.com/gpu"] == "1"
        assert n["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
        assert n["metadata"]["labels"]["renderfarm.io/pool-class"] == "gpu"
        taints = {(t["key"], t.get("value"), t["effect"]) for t in n["spec"].get("taints", [])}
        assert ("nvidia.com/gpu", "present", "NoSchedule") in taints
    for name in CPU_NODES:
        assert "nvidia.com/gpu" not in by_name[name]["status"]["allocatable"]


def test_gpu_deployment_schedules_one_pod_per_gpu_and_leaves_the_rest_pending(
    local_cluster: LocalCluster, namespace: str
) -> None:
    apply(local_cluster, namespace, deployment(
        "gpu-render", 3,
        pod_spec_extra={
            "nodeSelector": {"renderfarm.io/pool-class": "gpu"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
        resources={"limits": {"nvidia.com/gpu": 1}, "requests": {"cpu": "100m"}},
    ))

    def settled() -> dict[str, list[dict[str, Any]]] | None:
        pods = local_cluster.kubectl_json("get", "pods", "-n", namespace, "-l", "app=gpu-render")["items"]
        pods = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        running = [p for p in pods if p["status"].get("phase") == "Running"]
        pending = [p for p in pods if p["status"].get("phase") == "Pending"]
        unschedulable = [
            p for p in pending
            if any(c["type"] == "PodScheduled" and c["status"] == "False" and c.get("reason") == "Unschedulable"
                   for c in p["status"].get("conditions", []))
        ]
        if len(pods) == 3 and len(running) == 2 and len(unschedulable) == 1:
            return {"running": running, "pending": unschedulable}
        return None

    result = wait_for(settled, 60, "2 Running + 1 Unschedulable gpu-render pods")
    running_nodes = [p["spec"]["nodeName"] for p in result["running"]]
    assert sorted(running_nodes) == sorted(GPU_NODES), running_nodes
    pending = result["pending"][0]
    assert not pending["spec"].get("nodeName")
    cond = next(c for c in pending["status"]["conditions"] if c["type"] == "PodScheduled")
    assert "nvidia.com/gpu" in cond.get("message", ""), cond

    local_cluster.kubectl("delete", "deployment", "gpu-render", "-n", namespace, "--wait=true", check=True)
    wait_for(lambda: not local_cluster.kubectl_json("get", "pods", "-n", namespace)["items"], 30,
             "gpu-render pods to go away (frees the GPUs for later tests)")


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.renderfarm.io"},
    "spec": {
        "group": "test.renderfarm.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 0}}},
                    "status": {"type": "object", "properties": {
                        "replicas": {"type": "integer"}, "selector": {"type": "string"}}},
                },
            }},
            "subresources": {
                "status": {},
                "scale": {
                    "specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas",
                    "labelSelectorPath": ".status.selector",
                },
            },
        }],
    },
}


def test_crd_with_scale_subresource_can_be_scaled(local_cluster: LocalCluster, namespace: str) -> None:
    apply(local_cluster, None, WIDGET_CRD)
    local_cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.test.renderfarm.io",
                          "--timeout=30s", check=True)
    apply(local_cluster, namespace, {
        "apiVersion": "test.renderfarm.io/v1", "kind": "Widget",
        "metadata": {"name": "w1"}, "spec": {"replicas": 1},
    })
    local_cluster.kubectl("scale", "widget/w1", "-n", namespace, "--replicas=4", check=True)
    widget = local_cluster.kubectl_json("get", "widget", "w1", "-n", namespace)
    assert widget["spec"]["replicas"] == 4
    scale = json.loads(local_cluster.kubectl(
        "get", "--raw", f"/apis/test.renderfarm.io/v1/namespaces/{namespace}/widgets/w1/scale", check=True
    ).stdout)
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 4
    # status goes through its own subresource; the scale subresource reads it back
    local_cluster.kubectl("patch", "widget/w1", "-n", namespace, "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": {"replicas": 4, "selector": "app=w1"}}), check=True)
    scale = json.loads(local_cluster.kubectl(
        "get", "--raw", f"/apis/test.renderfarm.io/v1/namespaces/{namespace}/widgets/w1/scale", check=True
    ).stdout)
    assert scale["status"]["replicas"] == 4
    assert scale["status"]["selector"] == "app=w1"
    local_cluster.kubectl("delete", "crd", "widgets.test.renderfarm.io", "--wait=false", check=True)


def test_helm_install_and_uninstall_tiny_chart(local_cluster: LocalCluster, namespace: str) -> None:
    chart = CHARTS / "tiny"
    local_cluster.helm("install", "tiny", chart, "-n", namespace, "--wait", "--timeout", "90s",
                       "--set", "message=hello from the test", check=True)
    releases = json.loads(local_cluster.helm("list", "-n", namespace, "-o", "json", check=True).stdout)
    assert [(r["name"], r["status"]) for r in releases] == [("tiny", "deployed")]
    cm = local_cluster.kubectl_json("get", "configmap", "tiny-config", "-n", namespace)
    assert cm["data"]["message"] == "hello from the test"
    dep = local_cluster.kubectl_json("get", "deployment", "tiny", "-n", namespace)
    assert dep["spec"]["replicas"] == 1
    assert dep["status"].get("readyReplicas") == 1  # --wait: kwok made the pod Ready

    local_cluster.helm("uninstall", "tiny", "-n", namespace, "--wait", "--timeout", "60s", check=True)

    def gone() -> bool:
        objs = local_cluster.kubectl_json(
            "get", "configmap,deployment", "-n", namespace, "-l", "app.kubernetes.io/instance=tiny")
        return not objs["items"]

    wait_for(gone, 30, "helm uninstall to remove the ConfigMap and Deployment")
    for kind, name in (("configmap", "tiny-config"), ("deployment", "tiny")):
        r = local_cluster.kubectl("get", kind, name, "-n", namespace)
        assert r.returncode != 0 and "NotFound" in r.stderr, (kind, r.stderr)
    releases = json.loads(local_cluster.helm("list", "-n", namespace, "-o", "json", check=True).stdout)
    assert releases == []


def test_serviceaccount_needs_rbac_to_patch_deployment_scale(local_cluster: LocalCluster, namespace: str) -> None:
    apply(local_cluster, namespace, deployment("target", 1))
    local_cluster.kubectl("create", "serviceaccount", "scaler", "-n", namespace, check=True)
    sa_kc = local_cluster.serviceaccount_kubeconfig(namespace, "scaler")
    patch = ["patch", "deployment", "target", "-n", namespace, "--subresource=scale", "--type=merge",
             "-p", json.dumps({"spec": {"replicas": 2}})]

    who = local_cluster.kubectl("auth", "whoami", "-o", "json", kubeconfig=sa_kc, check=True)
    assert json.loads(who.stdout)["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:scaler"

    denied = local_cluster.kubectl(*patch, kubeconfig=sa_kc)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr, denied.stderr
    assert "deployments/scale" in denied.stderr or "deployments.apps" in denied.stderr, denied.stderr

    apply(local_cluster, namespace, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "deployment-scaler"},
        "rules": [{"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]}],
    })
    apply(local_cluster, namespace, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "deployment-scaler"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "deployment-scaler"},
        "subjects": [{"kind": "ServiceAccount", "name": "scaler", "namespace": namespace}],
    })

    # the RBAC authorizer sees new bindings through an informer: allow a moment
    allowed = wait_for(lambda: (r := local_cluster.kubectl(*patch, kubeconfig=sa_kc)).returncode == 0 and r,
                       15, "the scale patch to be allowed after the RoleBinding")
    assert "patched" in allowed.stdout
    dep = local_cluster.kubectl_json("get", "deployment", "target", "-n", namespace)
    assert dep["spec"]["replicas"] == 2

    # only the scale subresource was granted, not the deployment itself
    full = local_cluster.kubectl("patch", "deployment", "target", "-n", namespace, "--type=merge",
                                 "-p", json.dumps({"spec": {"replicas": 3}}), kubeconfig=sa_kc)
    assert full.returncode != 0 and "Forbidden" in full.stderr, full.stderr


def test_binaries_are_the_pinned_builds_from_the_cache(local_cluster: LocalCluster) -> None:
    pinned = versions()
    out = subprocess.run(["bash", str(K8S_DEV / "build-tools.sh"), "--print-bin-dir"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert Path(out) == local_cluster.bin_dir
    assert REPO_ROOT not in local_cluster.bin_dir.parents, "the tool cache must be outside the clone"

    v = json.loads(local_cluster.kubectl("version", "-o", "json", check=True).stdout)
    assert v["clientVersion"]["gitVersion"] == pinned["KUBERNETES_VERSION"]
    assert v["serverVersion"]["gitVersion"] == pinned["KUBERNETES_VERSION"]
    helm_v = local_cluster.helm("version", "--template", "{{.Version}}", check=True).stdout.strip()
    assert helm_v == pinned["HELM_VERSION"]
    etcd_v = subprocess.run([local_cluster.bin_dir / "etcd", "--version"], capture_output=True, text=True).stdout
    assert f"etcd Version: {pinned['ETCD_VERSION'].lstrip('v')}" in etcd_v
    for name, pid in local_cluster.pids.items():
        exe = os.readlink(f"/proc/{pid}/exe")
        assert exe == str(local_cluster.bin_dir / name), (name, exe)


def test_cli_up_status_down(k8s_tools: Path, tmp_path: Path) -> None:
    """`localkube.py up` starts a detached cluster, `status` sees it, `down` leaves nothing behind."""
    env = dict(os.environ, RF_K8S_STATE=str(tmp_path / "state"))
    script = K8S_DEV / "localkube.py"

    def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True,
                              text=True, timeout=timeout)

    up = cli("up")
    try:
        assert up.returncode == 0, up.stderr
        exports = [ln for ln in up.stdout.splitlines() if ln.startswith("export KUBECONFIG=")]
        assert len(exports) == 1, up.stdout
        kubeconfig = exports[0].split("=", 1)[1]
        state = json.loads((tmp_path / "state" / "state.json").read_text())
        assert state["kubeconfig"] == kubeconfig
        assert set(state["pids"]) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"}
        assert all(_pid_alive(pid) for pid in state["pids"].values())

        nodes = subprocess.run([k8s_tools / "kubectl", f"--kubeconfig={kubeconfig}", "get", "nodes", "-o", "json"],
                               capture_output=True, text=True, check=True).stdout
        assert {n["metadata"]["name"] for n in json.loads(nodes)["items"]} == CPU_NODES | GPU_NODES

        status = cli("status", timeout=60)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "rf-gpu-1" in status.stdout and "Ready" in status.stdout
    finally:
        down = cli("down", timeout=60)
    assert down.returncode == 0, down.stderr
    assert not [n for n, pid in state["pids"].items() if _pid_alive(pid)]
    assert not Path(state["workdir"]).exists()
    assert not (tmp_path / "state" / "state.json").exists()
    assert cli("status", timeout=30).returncode != 0
