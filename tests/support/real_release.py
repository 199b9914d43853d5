"""helm/renderfarm installed onto the local cluster's real node, with the images built here.

Shared by tests/k8s/test_helm_real_node.py and bench/bench_real_node.py.  The
media volume and Redis' volume are hostPath PersistentVolumes in the cluster's
work folder, so the caller writes inputs and reads outputs on the host side.
The API is reached through its Service's ClusterIP (kube-proxy's rules apply
to the host's own traffic too).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "renderfarm"
TERMINAL = {"succeeded", "failed", "cancelled"}


def split(image: str) -> dict[str, str]:
    repo, _, tag = image.rpartition(":")
    return {"repository": repo, "tag": tag}


def hostpath_pv(name: str, path: Path, size: str, mode: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": [mode],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": str(path), "type": "Directory"},
        },
    }


def values(images: dict[str, str], key_hash: str) -> dict[str, Any]:
    """Small requests (2 cores), local images, a cpu pool of 1..4 that reacts at once."""
    small = {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    return {
        "images": {"pullPolicy": "Never", "api": split(images["API_IMAGE"]),
                   "worker": split(images["WORKER_IMAGE"]), "workerGpu": split(images["WORKER_IMAGE"])},
        "apiKeys": {"hashes": [key_hash]},
        "api": {"replicas": 1, "resources": small},
        "operator": {"intervalSeconds": 1, "resources": small},
        "beat": {"resources": small},
        "redis": {"image": split(images["REDIS_IMAGE"]), "resources": small},
        "workers": {"pools": {"cpu": {
            "minReplicas": 1, "maxReplicas": 4, "backlogPerReplica": 1, "concurrency": 1,
            "idleDelaySeconds": 5, "terminationGracePeriodSeconds": 60,
            "scaleUp": {"stabilizationWindowSeconds": 0, "maxStep": 10},
            "scaleDown": {"stabilizationWindowSeconds": 0, "maxStep": 4},
            "resources": small,
        }}},
    }


@dataclass
class Release:
    cluster: Any
    namespace: str
    name: str
    base: str
    headers: dict[str, str]
    media: Path
    install_s: float
    timings: dict[str, float] = field(default_factory=dict)

    def submit(self, clip: str, height: int = 144, kind: str = "transcode") -> str:
        body: dict[str, Any] = {"kind": kind, "input": f"file:///data/inputs/{clip}", "priority": "normal"}
        if kind == "transcode":
            body["params"] = {"renditions": [{"height": height}]}
        r = httpx.post(f"{self.base}/v1/jobs", json=body, headers=self.headers, timeout=10)
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        return httpx.get(f"{self.base}/v1/jobs/{job_id}", headers=self.headers, timeout=10).json()

    def wait_job(self, job_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in TERMINAL:
                return job
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} not done after {timeout}s: {job}")

    def host_path(self, uri: str) -> Path:
        """An output's file:///data/... URI as a path on the host."""
        return self.media / uri.removeprefix("file:///data/")

    def uninstall(self) -> None:
        self.cluster.helm("uninstall", self.name, "-n", self.namespace, "--wait", "--timeout", "2m", timeout=180)
        self.cluster.kubectl("delete", "namespace", self.namespace, "--wait=false")


def install(cluster: Any, images: dict[str, str], *, namespace: str, name: str = "renderfarm",
            timeout_s: int = 300) -> Release:
    """hostPath PVs for media and Redis, then `helm install --wait`; raises with pods and events on failure."""
    volumes = cluster.workdir / "node" / "volumes" / namespace
    for sub in ("media", "media/inputs", "redis"):
        (volumes / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(volumes / sub, 0o777)  # hostPath volumes get no fsGroup change
    cluster.kubectl("apply", "-f", "-", check=True, input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        hostpath_pv(f"{namespace}-media", volumes / "media", "50Gi", "ReadWriteMany"),
        hostpath_pv(f"{namespace}-redis", volumes / "redis", "8Gi", "ReadWriteOnce"),
    ]}))
    key = secrets.token_urlsafe(24)
    values_file = cluster.workdir / f"{namespace}-values.json"
    values_file.write_text(json.dumps(values(images, hashlib.sha256(key.encode()).hexdigest())))
    t0 = time.monotonic()
    proc = cluster.helm("install", name, CHART, "-n", namespace, "--create-namespace", "-f", values_file,
                        "--wait", "--timeout", f"{timeout_s}s", timeout=timeout_s + 60)
    install_s = time.monotonic() - t0
    if proc.returncode != 0:
        pods = cluster.kubectl("get", "pods,pvc", "-n", namespace, "-o", "wide").stdout
        events = cluster.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp").stdout[-4000:]
        raise AssertionError(f"helm install failed: {proc.stderr[-2000:]}\n{pods}\n{events}")
    svc = cluster.kubectl_json("get", "service", f"{name}-api", "-n", namespace)
    base = f"http://{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"
    return Release(cluster, namespace, name, base, {"Authorization": f"Bearer {key}"}, volumes / "media", install_s)


def ready(pod: dict[str, Any]) -> bool:
    return any(x["type"] == "Ready" and x["status"] == "True" for x in pod["status"].get("conditions", []))
