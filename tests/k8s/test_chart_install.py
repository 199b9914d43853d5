"""`helm install` and `helm upgrade` of the chart on the local cluster's simulated (kwok) nodes.

kwok runs no containers, so this proves what the API server and the controllers
see: the objects are accepted, every Deployment rolls out, the WorkerPools show
their columns, an upgrade leaves the replica counts the operator set, and
uninstall keeps the CRD and the claims. (Pods that really run are the real-node
end-to-end test's business.)
"""

from __future__ import annotations

import json

import pytest

from tests.support.chart import CHART

# No provisioner on the local cluster: keep Redis and the media on emptyDirs here.
NO_CLAIMS = ["--set", "redis.persistence.enabled=false", "--set", "media.persistence.enabled=false"]


@pytest.fixture
def release(local_cluster, namespace):
    name = "rf"
    yield name
    local_cluster.helm("uninstall", name, "-n", namespace, "--wait", "--timeout", "60s")


def test_install_rolls_out_and_upgrade_keeps_the_operators_replicas(local_cluster, namespace, release):
    helm = local_cluster.helm
    proc = helm("install", release, CHART, "-n", namespace, *NO_CLAIMS, "--wait", "--timeout", "180s")
    assert proc.returncode == 0, proc.stderr
    assert "renderfarm apikey create" in proc.stdout  # NOTES: how to get a key

    deployments = {d["metadata"]["name"]: d for d in
                   local_cluster.kubectl_json("get", "deployments", "-n", namespace)["items"]}
    assert {"rf-renderfarm-api", "rf-renderfarm-operator", "rf-renderfarm-beat", "rf-renderfarm-worker-cpu",
            "rf-renderfarm-worker-gpu-transcribe", "rf-renderfarm-worker-gpu-vision"} <= set(deployments)
    for name, deployment in deployments.items():
        status = deployment.get("status", {})
        assert status.get("readyReplicas", 0) == deployment["spec"]["replicas"], name

    table = local_cluster.kubectl("get", "wp", "-n", namespace, check=True).stdout
    assert table.split("\n")[0].split()[:8] == ["NAME", "DEPLOYMENT", "MIN", "MAX", "PINNED", "DESIRED", "CURRENT",
                                                "BACKLOG"]
    assert sorted(line.split()[0] for line in table.strip().split("\n")[1:]) == ["cpu", "gpu-transcribe", "gpu-vision"]

    def redis_password() -> str:
        return local_cluster.kubectl_json("get", "secret", "rf-renderfarm-redis-auth", "-n", namespace)["data"]["password"]

    password = redis_password()
    # The operator scales through the scale subresource; an upgrade must not undo it.
    local_cluster.kubectl("scale", "deployment/rf-renderfarm-worker-cpu", "--replicas=3", "-n", namespace, check=True)
    proc = helm("upgrade", release, CHART, "-n", namespace, *NO_CLAIMS, "--set", "logLevel=DEBUG",
                "--set", "workers.pools.cpu.maxReplicas=6", "--wait", "--timeout", "180s")
    assert proc.returncode == 0, proc.stderr
    cpu = local_cluster.kubectl_json("get", "deployment/rf-renderfarm-worker-cpu", "-n", namespace)
    assert cpu["spec"]["replicas"] == 3
    env = {e["name"]: e.get("value") for e in cpu["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RF_LOG_LEVEL"] == "DEBUG"  # the change rolled the pods
    assert local_cluster.kubectl_json("get", "wp/cpu", "-n", namespace)["spec"]["maxReplicas"] == 6
    assert redis_password() == password  # a new random one would lock every pod out of the AOF it kept

    proc = helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "60s")
    assert proc.returncode == 0, proc.stderr
    left = json.loads(local_cluster.kubectl("get", "deployments,statefulsets,workerpools", "-n", namespace,
                                            "-o", "json", check=True).stdout)["items"]
    assert left == []
    assert local_cluster.kubectl("get", "crd", "workerpools.renderfarm.io").returncode == 0  # Helm keeps CRDs
    # Only the CRD and the claims outlive the release; a reinstall makes a new password.
    assert local_cluster.kubectl("get", "secret", "rf-renderfarm-redis-auth", "-n", namespace).returncode != 0
