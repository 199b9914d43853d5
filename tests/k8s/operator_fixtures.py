"""Fixtures for the operator's end-to-end tests on the local Kubernetes (tests/k8s/conftest.py).

    workerpool_crd   (session)  the WorkerPool CRD installed and established
    farm             (function) a namespace with the operator's Role and ServiceAccount, a
                                redis-server of its own and helpers to run the operator
                                out of the cluster as that ServiceAccount (never as admin)

Import them into a test module: ``from tests.k8s.operator_fixtures import farm, workerpool_crd``.
"""

from __future__ import annotations

import json
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import redis
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from tests.support.chart import CRD_FILE, helm_template
from tests.support.procs import wait_for as poll  # noqa: F401  (re-exported to the e2e tests)
from tests.support.procs import PYTHON, RedisServer, ServiceProcess, free_port, rf_env

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICE_ACCOUNT = "renderfarm-operator"
GPU_NODES = ("rf-gpu-0", "rf-gpu-1")


@pytest.fixture(scope="session")
def workerpool_crd(local_cluster):
    local_cluster.kubectl("apply", "-f", CRD_FILE, check=True)
    local_cluster.kubectl("wait", "--for=condition=Established", "crd/workerpools.renderfarm.io",
                          "--timeout=60s", check=True)
    return "workerpools.renderfarm.io"


def worker_deployment(name: str, *, gpu: bool = False, replicas: int = 0) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "worker", "image": "registry.invalid/renderfarm/worker:test"}
    pod_spec: dict[str, Any] = {"containers": [container], "terminationGracePeriodSeconds": 30}
    if gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": "1"}}
        pod_spec["nodeSelector"] = {"renderfarm.io/pool-class": "gpu"}
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    else:
        pod_spec["nodeSelector"] = {"renderfarm.io/pool-class": "cpu"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}},
    }


def worker_pool(name: str, deployment: str, queues: list[str], **spec: Any) -> dict[str, Any]:
    weights = spec.pop("weights", {})
    body = {"deployment": deployment,
            "queues": [{"name": q, **({"weight": weights[q]} if q in weights else {})} for q in queues]}
    body.update(spec)
    return {"apiVersion": "renderfarm.io/v1alpha1", "kind": "WorkerPool", "metadata": {"name": name}, "spec": body}


@dataclass
class Farm:
    """One test's farm: namespace, Redis, the operator's ServiceAccount, and helpers."""

    cluster: Any
    namespace: str
    redis_server: RedisServer
    workdir: Path
    sa_kubeconfig: Path
    apps: k8s_client.AppsV1Api
    core: k8s_client.CoreV1Api
    custom: k8s_client.CustomObjectsApi
    operators: list[ServiceProcess] = field(default_factory=list)

    # -- Redis ----------------------------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        return self.redis_server.url

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=5)

    def stop_redis(self) -> None:
        self.redis_server.stop()

    def start_redis(self) -> None:
        self.redis_server = RedisServer(self.redis_server.workdir, port=self.redis_server.port).start()

    # -- the operator -----------------------------------------------------------------------------

    def operator_env(self, **extra: str) -> dict[str, str]:
        env = rf_env(self.redis_url, self.workdir / "data")
        env.update({
            "KUBECONFIG": str(self.sa_kubeconfig),  # the least-privilege ServiceAccount, not admin
            "RF_OPERATOR_NAMESPACE": self.namespace,
            "RF_OPERATOR_METRICS_PORT": str(free_port()),
            "RF_OPERATOR_METRICS_HOST": "127.0.0.1",
        })
        env.pop("KUBERNETES_SERVICE_HOST", None)
        env.update(extra)
        return env

    def start_operator(self, *, wait_leader: bool = True, **extra: str) -> ServiceProcess:
        env = self.operator_env(**extra)
        index = len(self.operators)
        proc = ServiceProcess([PYTHON, "-m", "renderfarm.operator"], env,
                              self.workdir / "logs" / f"operator-{index}.log").start()
        proc.metrics_port = int(env["RF_OPERATOR_METRICS_PORT"])  # type: ignore[attr-defined]
        self.operators.append(proc)
        if wait_leader:
            poll(lambda: "leads (lease" in proc.log() or not proc.alive(), 60, "the operator to lead")
            assert proc.alive(), f"operator exited:\n{proc.log()[-3000:]}"
        return proc

    def metrics(self, proc: ServiceProcess) -> dict[str, float]:
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5).read().decode()  # type: ignore[attr-defined]
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def operator_logs(self) -> str:
        return "\n".join(proc.log() for proc in self.operators)

    # -- Kubernetes -------------------------------------------------------------------------------

    def kubectl(self, *args: Any, check: bool = True, **kw: Any):
        return self.cluster.kubectl(*args, "-n", self.namespace, check=check, **kw)

    def apply(self, obj: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def replicas(self, deployment: str) -> int:
        return int(self.apps.read_namespaced_deployment_scale(deployment, self.namespace).spec.replicas or 0)

    def deployment_generation(self, deployment: str) -> int:
        return int(self.apps.read_namespaced_deployment(deployment, self.namespace).metadata.generation)

    def pool(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object("renderfarm.io", "v1alpha1", self.namespace, "workerpools", name)

    def condition(self, pool: str, type_: str) -> dict[str, Any] | None:
        conditions = (self.pool(pool).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == type_), None)

    def condition_is(self, pool: str, type_: str, status: str) -> bool:
        found = self.condition(pool, type_)
        return found is not None and found["status"] == status

    def pods(self, selector: str) -> list[k8s_client.V1Pod]:
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def events(self, pool: str) -> list[k8s_client.CoreV1Event]:
        return self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.kind=WorkerPool,involvedObject.name={pool}").items

    def wait_replicas(self, deployment: str, predicate: Callable[[int], bool], timeout: float, what: str) -> float:
        """Seconds until the Deployment's replicas satisfy ``predicate``."""
        started = time.monotonic()
        poll(lambda: predicate(self.replicas(deployment)), timeout, f"{deployment} replicas: {what}", interval=0.05)
        return time.monotonic() - started

    def gpu_pods_elsewhere(self) -> list[str]:
        pods = self.core.list_pod_for_all_namespaces(field_selector="status.phase!=Succeeded,status.phase!=Failed").items
        return [f"{p.metadata.namespace}/{p.metadata.name}" for p in pods
                if p.spec.node_name in GPU_NODES and p.metadata.namespace != self.namespace]


def _service_account_kubeconfig(cluster, namespace: str) -> Path:
    # localkube's helper; written into the cluster's own folder
    return Path(cluster.serviceaccount_kubeconfig(namespace, SERVICE_ACCOUNT))


FORBIDDEN = r"(?<![,.:\d])\b403\b|[Ff]orbidden"


@pytest.fixture
def farm(local_cluster, workerpool_crd, namespace, tmp_path):
    # Exactly the ServiceAccount, Role and RoleBinding the chart installs.
    rbac = tmp_path / "operator-rbac.yaml"
    rbac.write_text(helm_template(local_cluster.bin_dir / "helm", "--show-only", "templates/operator-rbac.yaml",
                                  namespace=namespace))
    local_cluster.kubectl("apply", "-n", namespace, "-f", rbac, check=True)
    server = RedisServer(tmp_path / "redis").start()
    (tmp_path / "data" / "inputs").mkdir(parents=True)
    api = k8s_config.new_client_from_config(config_file=str(local_cluster.kubeconfig))
    the_farm = Farm(
        cluster=local_cluster, namespace=namespace, redis_server=server, workdir=tmp_path,
        sa_kubeconfig=_service_account_kubeconfig(local_cluster, namespace),
        apps=k8s_client.AppsV1Api(api), core=k8s_client.CoreV1Api(api), custom=k8s_client.CustomObjectsApi(api),
    )
    yield the_farm
    for proc in the_farm.operators:
        proc.stop(signal.SIGTERM, 15)
    the_farm.redis_server.stop()
    # Forbidden calls would mean the chart's operator Role is missing a rule the operator needs.
    # (403 as a status, not the milliseconds of a log line's timestamp: "05:00:28,403")
    forbidden = [line for line in the_farm.operator_logs().splitlines() if re.search(FORBIDDEN, line)]
    api.close()
    assert not forbidden, "the operator was refused by the API server:\n" + "\n".join(forbidden[:10])
