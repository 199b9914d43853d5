"""`helm install` of helm/renderfarm onto the local cluster's real node, with the images built here.

The release runs for real: API, bundled Redis, beat, the operator (in-cluster,
as the chart's ServiceAccount) and the cpu pool are real pods on rf-node-0; the
GPU pools are Deployments for the simulated GPU nodes.  The media volume and
Redis' volume are hostPath PersistentVolumes on the node, so the test writes
inputs and reads outputs (with ffprobe) on the host side of the same folder.

The test process reaches the API through its Service's ClusterIP: kube-proxy's
iptables rules apply to the host's own traffic too.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx
import pytest

from localkube import LocalCluster
import realnode
from tests.support.media import ffprobe, make_clip, stream
from tests.support.real_release import CHART, TERMINAL, Release, install, ready

pytestmark = pytest.mark.timeout(600)

RELEASE = "renderfarm"  # fullname = release name (it contains the chart name)
NS = "rf-e2e"


@pytest.fixture(scope="module")
def release(real_cluster: LocalCluster, built_images: dict[str, str]):
    rel = install(real_cluster, built_images, namespace=NS, name=RELEASE)
    print(f"helm install --wait: {rel.install_s:.1f}s")
    yield rel
    rel.uninstall()


def pods(c: LocalCluster, selector: str) -> list[dict[str, Any]]:
    return c.kubectl_json("get", "pods", "-n", NS, "-l", selector)["items"]


# --------------------------------------------------------------------------


def test_install_brings_every_farm_pod_ready_on_the_real_node(real_cluster: LocalCluster, release) -> None:
    c = real_cluster
    all_pods = c.kubectl_json("get", "pods", "-n", NS)["items"]
    by_component: dict[str, list[dict[str, Any]]] = {}
    for p in all_pods:
        by_component.setdefault(p["metadata"]["labels"].get("app.kubernetes.io/component", "?"), []).append(p)
    print({k: len(v) for k, v in by_component.items()})
    for p in all_pods:
        if p["metadata"].get("annotations", {}).get("helm.sh/hook"):
            continue
        assert ready(p), f"{p['metadata']['name']} not Ready: {p['status']}"
        # every running farm pod is on the real node (GPU pools have no pods at minReplicas 0)
        assert p["spec"]["nodeName"] == realnode.NODE_NAME, p["metadata"]["name"]
        assert p["status"]["containerStatuses"][0]["containerID"].startswith("containerd://")
    names = " ".join(p["metadata"]["name"] for p in all_pods)
    for part in ("-api-", "-redis-0", "-beat-", "-operator-", "-worker-cpu-"):
        assert part in names, f"no {part} pod in {names}"
    wp = c.kubectl("get", "wp", "-n", NS, check=True).stdout
    header = wp.splitlines()[0].split()
    assert header[:2] == ["NAME", "DEPLOYMENT"] and "BACKLOG" in header, wp
    assert {"cpu", "gpu-transcribe", "gpu-vision"} <= {ln.split()[0] for ln in wp.splitlines()[1:]}, wp


def test_helm_test_passes(real_cluster: LocalCluster, release) -> None:
    t0 = time.monotonic()
    proc = real_cluster.helm("test", RELEASE, "-n", NS, "--timeout", "4m", "--logs", timeout=300)
    print(f"helm test: {time.monotonic() - t0:.1f}s")
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Phase:          Succeeded" in proc.stdout, proc.stdout


def test_transcode_through_the_api_service_succeeds_and_ffprobe_checks_it(release) -> None:
    rel: Release = release
    clip = make_clip(rel.media / "inputs" / "e2e.mp4", duration=2, width=320, height=240)
    os.chmod(clip, 0o644)
    job_id = rel.submit("e2e.mp4", height=144)
    job = rel.wait_job(job_id)
    assert job["status"] == "succeeded", job
    outputs = job["result"]["outputs"]
    assert [o["name"] for o in outputs] == ["144p.mp4"], outputs
    out = rel.host_path(outputs[0]["uri"])
    video = stream(ffprobe(out), "video")
    assert video["height"] == 144 and video["codec_name"] == "h264", video
    assert abs(float(ffprobe(out)["format"]["duration"]) - 2.0) < 0.2


def test_backlog_scales_the_cpu_pool_up_with_real_pods_and_back_down(real_cluster: LocalCluster, release) -> None:
    c = real_cluster
    rel: Release = release
    selector = "app.kubernetes.io/component=worker-cpu"
    wp = c.kubectl_json("get", "wp", "cpu", "-n", NS)
    dep = wp["spec"]["deployment"]
    before = {p["metadata"]["name"] for p in pods(c, f"app.kubernetes.io/name=renderfarm")
              if p["metadata"]["name"].startswith(dep)}
    assert len(before) == 1, before
    clip = make_clip(rel.media / "inputs" / "scale.mp4", duration=4, width=640, height=360)
    os.chmod(clip, 0o644)
    t0 = time.monotonic()
    ids = [rel.submit("scale.mp4", height=240) for _ in range(10)]
    # the operator (in-cluster) sees the backlog and scales the Deployment; new real pods turn Ready
    first_new_ready = None
    peak = 1
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        now = [p for p in c.kubectl_json("get", "pods", "-n", NS)["items"] if p["metadata"]["name"].startswith(dep)]
        new_ready = [p for p in now if p["metadata"]["name"] not in before and ready(p)]
        if new_ready and first_new_ready is None:
            first_new_ready = time.monotonic() - t0
        peak = max(peak, sum(1 for p in now if ready(p)))
        if peak >= 3:
            break
        time.sleep(0.25)
    print(f"backlog -> first new worker pod Ready: {first_new_ready}s; peak Ready worker pods {peak}")
    assert first_new_ready is not None, c.kubectl("describe", "wp", "cpu", "-n", NS).stdout[-3000:]
    assert peak >= 3
    jobs = [rel.wait_job(i, timeout=300) for i in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * len(ids), [(j["id"], j["status"]) for j in jobs]
    # none lost, none run twice
    assert [j.get("attempts", 1) for j in jobs] == [1] * len(ids), [j.get("attempts") for j in jobs]
    workers = {j.get("worker") for j in jobs} - {None}
    print(f"jobs ran on {len(workers)} workers")
    for j in jobs:
        out = rel.host_path(j["result"]["outputs"][0]["uri"])
        assert stream(ffprobe(out), "video")["height"] == 240
    # idle: back down to minReplicas
    deadline = time.monotonic() + 150
    replicas = None
    while time.monotonic() < deadline:
        replicas = c.kubectl_json("get", "deployment", dep, "-n", NS)["spec"]["replicas"]
        if replicas == 1:
            break
        time.sleep(1)
    assert replicas == 1, c.kubectl_json("get", "wp", "cpu", "-n", NS)["status"]


def wp_status(c: LocalCluster, name: str) -> dict[str, Any]:
    return c.kubectl_json("get", "wp", name, "-n", NS)


def deployment_replicas(c: LocalCluster, name: str) -> int:
    return c.kubectl_json("get", "deployment", name, "-n", NS)["spec"]["replicas"]


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last})")


def test_kubectl_scale_pins_the_pool_and_clearing_the_pin_resumes(real_cluster: LocalCluster, release) -> None:
    c = real_cluster
    dep = wp_status(c, "cpu")["spec"]["deployment"]
    c.kubectl("scale", "wp/cpu", "--replicas=2", "-n", NS, check=True)
    assert wp_status(c, "cpu")["spec"]["pinnedReplicas"] == 2
    wait_for("2 replicas while pinned", lambda: deployment_replicas(c, dep) == 2, 30)
    wait_for("2 real worker pods Ready", lambda: c.kubectl_json("get", "deployment", dep, "-n", NS)
             ["status"].get("readyReplicas") == 2, 60)
    row = next(ln for ln in c.kubectl("get", "wp", "-n", NS, check=True).stdout.splitlines() if ln.startswith("cpu "))
    assert " 2 " in row, row  # the PINNED column
    c.kubectl("patch", "wp/cpu", "-n", NS, "--type=merge", "-p", '{"spec":{"pinnedReplicas":null}}', check=True)
    # idle farm: autoscaling takes it back to minReplicas
    wait_for("back to 1 replica", lambda: deployment_replicas(c, dep) == 1, 60)


def test_patch_pools_changes_max_and_the_operator_obeys(real_cluster: LocalCluster, release) -> None:
    c = real_cluster
    rel: Release = release
    dep = wp_status(c, "cpu")["spec"]["deployment"]
    listed = httpx.get(f"{rel.base}/v1/pools", headers=rel.headers, timeout=10)
    assert listed.status_code == 200, listed.text
    assert {p["name"] for p in listed.json()} >= {"cpu", "gpu-transcribe", "gpu-vision"}
    r = httpx.patch(f"{rel.base}/v1/pools/cpu", json={"max_replicas": 2}, headers=rel.headers, timeout=10)
    assert r.status_code == 200, r.text  # the API's ServiceAccount may patch WorkerPools
    assert wp_status(c, "cpu")["spec"]["maxReplicas"] == 2
    try:
        clip = make_clip(rel.media / "inputs" / "max.mp4", duration=4, width=640, height=360)
        os.chmod(clip, 0o644)
        ids = [rel.submit("max.mp4", height=240) for _ in range(8)]
        peak = 0
        deadline = time.monotonic() + 240
        done = 0
        while time.monotonic() < deadline and done < len(ids):
            peak = max(peak, deployment_replicas(c, dep))
            done = sum(httpx.get(f"{rel.base}/v1/jobs/{i}", headers=rel.headers, timeout=10).json()["status"] in TERMINAL
                       for i in ids)
            time.sleep(0.5)
        assert done == len(ids)
        assert peak == 2, f"peak replicas {peak} with max 2 and a backlog of 8"
    finally:
        r = httpx.patch(f"{rel.base}/v1/pools/cpu", json={"max_replicas": 4}, headers=rel.headers, timeout=10)
        assert r.status_code == 200, r.text


def test_deleting_a_worker_pod_mid_job_lets_the_job_finish(real_cluster: LocalCluster, release) -> None:
    c = real_cluster
    rel: Release = release
    clip = make_clip(rel.media / "inputs" / "long.mp4", duration=20, width=640, height=360)
    os.chmod(clip, 0o644)
    job_id = rel.submit("long.mp4", height=360)
    job = wait_for("the job running", lambda: (lambda j: j if j["status"] == "running" and j.get("worker") else None)(
        httpx.get(f"{rel.base}/v1/jobs/{job_id}", headers=rel.headers, timeout=10).json()), 60, 0.2)
    pod_name = job["worker"].split("@", 1)[1]
    c.kubectl("delete", "pod", pod_name, "-n", NS, "--grace-period=60", "--wait=false", check=True)
    final = rel.wait_job(job_id, timeout=240)
    # warm shutdown within the grace period: the job finishes on the pod being deleted
    # (or, cut off, runs again exactly once)
    assert final["status"] == "succeeded", final
    assert final["attempts"] in (1, 2), final
    if final["attempts"] == 1:
        assert final["worker"] == job["worker"]
    print(f"mid-job delete: attempts {final['attempts']}, worker {final['worker']}")
    assert stream(ffprobe(rel.host_path(final["result"]["outputs"][0]["uri"])), "video")["height"] == 360


def test_helm_upgrade_rolls_the_workers_while_jobs_are_in_flight(real_cluster: LocalCluster, release) -> None:
    c = real_cluster
    rel: Release = release
    dep = wp_status(c, "cpu")["spec"]["deployment"]
    old_rs = c.kubectl_json("get", "deployment", dep, "-n", NS)["metadata"]["annotations"][
        "deployment.kubernetes.io/revision"]
    clip = make_clip(rel.media / "inputs" / "upgrade.mp4", duration=6, width=640, height=360)
    os.chmod(clip, 0o644)
    ids = [rel.submit("upgrade.mp4", height=240) for _ in range(6)]
    wait_for("a job running", lambda: any(
        httpx.get(f"{rel.base}/v1/jobs/{i}", headers=rel.headers, timeout=10).json()["status"] == "running" for i in ids), 60)
    proc = c.helm("upgrade", RELEASE, CHART, "-n", NS, "--reuse-values",
                  "--set", "workers.pools.cpu.concurrency=2", "--wait", "--timeout", "5m", timeout=360)
    assert proc.returncode == 0, proc.stderr
    new = c.kubectl_json("get", "deployment", dep, "-n", NS)
    assert new["metadata"]["annotations"]["deployment.kubernetes.io/revision"] != old_rs  # the pods rolled
    jobs = [rel.wait_job(i, timeout=300) for i in ids]
    assert [j["status"] for j in jobs] == ["succeeded"] * len(ids), [(j["id"], j["status"], j.get("error"))
                                                                      for j in jobs]
    assert all(j["attempts"] in (1, 2) for j in jobs), [j["attempts"] for j in jobs]


def test_gpu_backlog_scales_onto_the_simulated_gpu_nodes_until_capacity_runs_out(
        real_cluster: LocalCluster, release) -> None:
    c = real_cluster
    rel: Release = release
    dep = wp_status(c, "gpu-vision")["spec"]["deployment"]
    os.chmod(make_clip(rel.media / "inputs" / "gpu.mp4", duration=1), 0o644)
    # room above the two GPUs of the simulated nodes, so that capacity (not max) is the limit
    r = httpx.patch(f"{rel.base}/v1/pools/gpu-vision", json={"max_replicas": 10}, headers=rel.headers, timeout=10)
    assert r.status_code == 200, r.text

    def conditions() -> dict[str, Any]:
        return {x["type"]: x for x in wp_status(c, "gpu-vision").get("status", {}).get("conditions", [])}

    ids: list[str] = []
    try:
        # the backlog grows one job at a time: each new job asks for more replicas, so the
        # operator reads the pods and finds the Pending (Unschedulable) ones
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and conditions().get("CapacityLimited", {}).get("status") != "True":
            if len(ids) < 12:
                r = httpx.post(f"{rel.base}/v1/jobs", json={"kind": "vision", "input": "file:///data/inputs/gpu.mp4"},
                               headers=rel.headers, timeout=10)
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            time.sleep(1.5)
        gpu_pods = [p for p in c.kubectl_json("get", "pods", "-n", NS)["items"]
                    if p["metadata"]["name"].startswith(dep)]
        phases = [(p["metadata"]["name"], p["status"].get("phase"), p["spec"].get("nodeName")) for p in gpu_pods]
        cond = conditions().get("CapacityLimited", {})
        assert cond.get("status") == "True", f"{cond}\n{phases}"
        print(f"CapacityLimited after {len(ids)} jobs: {cond.get('message')}; pods {phases}")
        running = [p for p in gpu_pods if p["status"].get("phase") == "Running"]
        assert {p["spec"]["nodeName"] for p in running} == {"rf-gpu-0", "rf-gpu-1"}, phases
        assert len(running) == 2, phases
        # it stopped growing: fewer replicas than the backlog asks for
        assert deployment_replicas(c, dep) < len(ids)
    finally:
        for i in ids:
            httpx.post(f"{rel.base}/v1/jobs/{i}/cancel", headers=rel.headers, timeout=10)
        httpx.patch(f"{rel.base}/v1/pools/gpu-vision", json={"max_replicas": 4}, headers=rel.headers, timeout=10)
        c.kubectl("scale", "wp/gpu-vision", "--replicas=0", "-n", NS)


def test_uninstall_removes_everything_but_the_crd_and_the_pvcs(real_cluster: LocalCluster, release) -> None:
    c = real_cluster
    proc = c.helm("uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "3m", timeout=240)
    assert proc.returncode == 0, proc.stderr
    left = c.kubectl_json("get", "deployments,statefulsets,services,configmaps,secrets,serviceaccounts,roles,"
                          "rolebindings,workerpools,poddisruptionbudgets,networkpolicies", "-n", NS)["items"]
    ours = [o for o in left if o["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE]
    assert not [f"{o['kind']}/{o['metadata']['name']}" for o in ours]
    wait_for("farm pods gone", lambda: not [p for p in c.kubectl_json("get", "pods", "-n", NS)["items"]
                                            if not p["metadata"].get("annotations", {}).get("helm.sh/hook")], 120)
    assert c.kubectl("get", "crd", "workerpools.renderfarm.io").returncode == 0  # Helm keeps CRDs
    pvcs = {p["metadata"]["name"] for p in c.kubectl_json("get", "pvc", "-n", NS)["items"]}
    assert any("redis" in n for n in pvcs), pvcs  # the StatefulSet's claim stays (Helm's rule)
