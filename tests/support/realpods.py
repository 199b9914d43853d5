"""Pods of our images for the local cluster's real node (tests/k8s).

Every pod runs as our images promise to run in production: non-root, read-only
root filesystem, all capabilities dropped, seccomp RuntimeDefault, with /tmp and
/data from emptyDir.  Images are local only (imagePullPolicy: Never).
"""

from __future__ import annotations

import json
import time
from typing import Any

REAL_NODE_SELECTOR = {"renderfarm.io/real-node": "true"}


def restricted_pod(name: str, image: str, *, command: list[str] | None = None, args: list[str] | None = None,
                   env: dict[str, str] | None = None, labels: dict[str, str] | None = None,
                   port: int | None = None, readiness_path: str | None = None,
                   grace_seconds: int = 30, run_as: int = 10001) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "main",
        "image": image,
        "imagePullPolicy": "Never",
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "data", "mountPath": "/data"}],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}},
    }
    if command:
        container["command"] = command
    if args:
        container["args"] = args
    if port:
        container["ports"] = [{"containerPort": port}]
    if readiness_path and port:
        container["readinessProbe"] = {"httpGet": {"path": readiness_path, "port": port},
                                       "periodSeconds": 1, "failureThreshold": 30}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name, **(labels or {})}},
        "spec": {
            "nodeSelector": REAL_NODE_SELECTOR,
            "terminationGracePeriodSeconds": grace_seconds,
            "enableServiceLinks": False,
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": run_as, "runAsGroup": run_as,
                                "fsGroup": run_as, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "data", "emptyDir": {}}],
        },
    }


def service(name: str, port: int, selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector or {"app": name}, "ports": [{"port": port, "targetPort": port}]},
    }


def apply(cluster: Any, namespace: str, *objs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}), check=True)


def wait_ready(cluster: Any, namespace: str, name: str, timeout: float = 120) -> dict[str, Any]:
    """Wait until pod `name` is Ready; return it.  On time-out, fail with its status and events."""
    deadline = time.monotonic() + timeout
    pod: dict[str, Any] = {}
    while time.monotonic() < deadline:
        proc = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json")
        if proc.returncode == 0:
            pod = json.loads(proc.stdout)
            conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
            if conds.get("Ready") == "True":
                return pod
        time.sleep(0.2)
    events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                             f"involvedObject.name={name}").stdout
    logs = cluster.kubectl("logs", name, "-n", namespace, "--tail=30").stdout
    raise AssertionError(f"pod {namespace}/{name} not Ready after {timeout}s: "
                         f"{json.dumps(pod.get('status', {}), indent=1)[-3000:]}\nevents:\n{events}\nlogs:\n{logs}")
