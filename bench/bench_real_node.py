#!/usr/bin/env python
"""helm/renderfarm on the local cluster's real node: install time, scale-up reaction, in-cluster throughput.

1. start     LocalCluster(real_node=True) with the images of `make images` (warm cache)
2. install   `helm install --wait` to API, Redis, beat, operator and the cpu pool Ready
3. scale-up  each trial waits until the cpu pool is back at its minimum (1 pod), submits
             a backlog of 3 transcodes through the API Service and times the moment the
             first new worker pod is Ready (p50/p99).                     target: p99 <= 10 s
4. jobs/s    probe jobs through the API Service with the cpu pool pinned at 2 pods
             (concurrency 1 each), submit to the last one succeeded; compared with the
             `throughput` section's renderfarm probe rate (`make run`'s farm on the host)
             when that section ran in the same bench.

Needs root and the real node's pieces (make node-tools images); skipped otherwise.
``run(report)`` reports to bench/run.py's Report (section ``real-node``) or fills a
dict; standalone: ``python bench/bench_real_node.py [--quick]`` prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
for p in (REPO_ROOT, REPO_ROOT / "k8s" / "dev"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import localkube  # noqa: E402
import realnode  # noqa: E402
from tests.support.media import make_clip  # noqa: E402
from tests.support.real_release import install, ready  # noqa: E402

SECTION = "real-node"
TARGET_SCALE_UP_P99_S = 10.0
NS = "bench-real-node"
MISS_AFTER_S = 90.0  # a trial with no new pod Ready by then is a miss


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def worker_pods(c: localkube.LocalCluster, dep: str) -> list[dict[str, Any]]:
    return [p for p in c.kubectl_json("get", "pods", "-n", NS)["items"] if p["metadata"]["name"].startswith(dep + "-")]


def wait(what: str, check: Any, timeout: float, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def measure(quick: bool) -> dict[str, Any]:
    trials = 3 if quick else 10
    probes = 20 if quick else 60
    images = {k: v for k, v in localkube.read_images_env(localkube.DEFAULT_IMAGES_ENV).items() if k != "BASE_IMAGE"}
    t0 = time.monotonic()
    cluster = localkube.LocalCluster(real_node=True, images=images.values())
    cluster.start()
    out: dict[str, Any] = {"status": "ran", "cluster_start_s": round(time.monotonic() - t0, 2),
                           "node_timings": dict(cluster.node.timings) if cluster.node else {}}
    try:
        rel = install(cluster, images, namespace=NS)
        out["helm_install_s"] = round(rel.install_s, 2)
        dep = cluster.kubectl_json("get", "wp", "cpu", "-n", NS)["spec"]["deployment"]
        clip = make_clip(rel.media / "inputs" / "bench.mp4", duration=4, width=640, height=360)
        os.chmod(clip, 0o644)

        reactions: list[float] = []
        misses: list[dict[str, Any]] = []
        for _ in range(trials):
            # back at the minimum: one Ready pod and nothing terminating
            wait("the cpu pool at 1 pod", lambda: (lambda ps: len(ps) == 1 and ready(ps[0])
                                                  and not ps[0]["metadata"].get("deletionTimestamp"))(
                worker_pods(cluster, dep)), 180)
            before = {p["metadata"]["name"] for p in worker_pods(cluster, dep)}
            start = time.monotonic()
            ids = [rel.submit("bench.mp4", height=240) for _ in range(3)]
            first = None
            while first is None and time.monotonic() - start < MISS_AFTER_S:
                if any(ready(p) for p in worker_pods(cluster, dep) if p["metadata"]["name"] not in before):
                    first = time.monotonic() - start
                else:
                    time.sleep(0.1)
            if first is None:
                # a miss counts as MISS_AFTER_S in the percentiles; say what the operator saw
                status = cluster.kubectl_json("get", "wp", "cpu", "-n", NS).get("status", {})
                misses.append({"last_scale_reason": status.get("lastScaleReason"),
                               "desired": status.get("desiredReplicas"), "backlog": status.get("backlog"),
                               "pods": [(p["metadata"]["name"], p["status"].get("phase"), ready(p))
                                        for p in worker_pods(cluster, dep)]})
                first = MISS_AFTER_S
            reactions.append(first)
            for i in ids:
                rel.wait_job(i, timeout=300)
        out["scale_up_first_pod_ready_s"] = [round(r, 2) for r in reactions]
        out["scale_up_misses"] = misses
        out["scale_up_p50_s"] = round(statistics.median(reactions), 2)
        out["scale_up_p99_s"] = round(pct(reactions, 0.99), 2)

        # in-cluster throughput of probe jobs, the pool pinned at 2 pods
        cluster.kubectl("scale", "wp/cpu", "--replicas=2", "-n", NS, check=True)
        wait("2 Ready worker pods", lambda: sum(ready(p) for p in worker_pods(cluster, dep)
                                                if not p["metadata"].get("deletionTimestamp")) == 2, 120)
        start = time.monotonic()
        ids = [rel.submit("bench.mp4", kind="probe") for _ in range(probes)]
        submitted = time.monotonic() - start
        jobs = [rel.wait_job(i, timeout=600) for i in ids]
        took = time.monotonic() - start
        out["probe_jobs"] = probes
        out["probe_submit_s"] = round(submitted, 2)
        out["probe_jobs_per_s"] = round(probes / took, 2)
        out["probe_succeeded"] = sum(j["status"] == "succeeded" for j in jobs)
        rel.uninstall()
    finally:
        cluster.stop()
        out["teardown_left"] = cluster.node_left
    return out


def run(report: Any, quick: bool | None = None) -> dict[str, Any]:
    quick = bool(getattr(report, "quick", False)) if quick is None else quick
    why = ""
    if os.geteuid() != 0:
        why = "needs root (the real node)"
    elif not (realnode.node_tools_ready() and localkube.tools_ready()):
        why = "node or Kubernetes tools not built (make node-tools k8s-tools)"
    elif not localkube.read_images_env(localkube.DEFAULT_IMAGES_ENV):
        why = "no build/images.env (make images)"
    if why:
        results = {"status": "not run", "reason": why}
        if isinstance(report, dict):
            report.update(results)
        else:
            report.row(SECTION, "real node", verdict="not run", note=why)
        return results
    results = measure(quick)
    if isinstance(report, dict):
        report.update(results)
        return results
    report.result(SECTION, results)
    report.row(SECTION, "cluster start with the real node (warm)", measured=f"{results['cluster_start_s']:.1f} s")
    report.row(SECTION, "helm install --wait (API, Redis, beat, operator, cpu pool)",
               measured=f"{results['helm_install_s']:.1f} s")
    report.check(SECTION, "backlog -> first new real worker pod Ready p99", results["scale_up_p99_s"],
                 limit=TARGET_SCALE_UP_P99_S, unit=" s",
                 note=f"p50 {results['scale_up_p50_s']:.2f} s over {len(results['scale_up_first_pod_ready_s'])} "
                      f"trials ({len(results['scale_up_misses'])} missed {MISS_AFTER_S:.0f} s); "
                      f"operator interval 1 s, local images")
    local = getattr(report, "data", {}).get("results", {}).get("throughput", {}).get("renderfarm_probe_rps")
    ratio = f"{results['probe_jobs_per_s'] / local:.2f}x of make run's farm" if local else ""
    report.row(SECTION, "probe jobs/s through the in-cluster API (2 worker pods)",
               measured=f"{results['probe_jobs_per_s']:.2f} jobs/s", ratio=ratio,
               note=f"{results['probe_succeeded']}/{results['probe_jobs']} succeeded")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(run({}, quick=args.quick), indent=2))


if __name__ == "__main__":
    main()
