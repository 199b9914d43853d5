#!/usr/bin/env python
"""Chunked transcode scaling: one long clip, encoded single-pass and as a
``chunked-transcode`` workflow, by workers pinned to one core each.

- Each worker process (concurrency 1) runs under ``taskset`` on its own core; x264
  runs with one thread on both sides (the chunks' ``threads: 1``; the single pass
  sees one core, and x264's own settings in each output are read back to prove it).
- Measured per round, in this order: single-pass on one worker, chunked on one
  worker, chunked on two workers. Wall time is submit -> last output written (the
  workflow's or the job's end), so queue hops, split and concat are all counted.
- ``scaling`` = chunked 1 worker / chunked 2 workers (target >= 1.7x);
  ``overhead`` = chunked 1 worker / single-pass 1 worker (target <= 1.10x). Both are
  the median over rounds of per-round ratios, with their spread; CPU seconds are the
  workers' process trees' (pool processes and their ffmpeg).

``run(report)`` reports through bench/run.py's Report (section ``chunked``);
standalone, ``python bench/bench_chunked.py [--quick]`` prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import psutil  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from renderfarm.api.app import create_app  # noqa: E402
from renderfarm.core.settings import Settings  # noqa: E402
from bench.scratch import measure_in_scratch  # noqa: E402
from tests.support.procs import PYTHON, RedisServer, ServiceProcess, free_port, rf_env, wait_for  # noqa: E402

SECTION = "chunked"
TARGET_SCALING = 1.7
TARGET_OVERHEAD = 1.10
KEY = "bench-chunked-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
RENDITION = {"height": 360, "crf": 23, "preset": "veryfast"}


def make_long_clip(path: Path, duration_s: float) -> Path:
    """640x360 at 25 fps with moving noise (so x264 has real work), a tone, a 2 s GOP."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=25:duration={duration_s}",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={duration_s}",
                    "-vf", "noise=alls=12:allf=t", "-c:v", "libx264", "-preset", "veryfast", "-g", "50",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], check=True)
    return path


def tree_cpu_s(pid: int) -> float:
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def x264_threads(path: Path) -> str:
    head = path.read_bytes()[:200_000]
    at = head.find(b" threads=")
    return head[at + 9:head.find(b" ", at + 9)].decode() if at >= 0 else "?"


class Farm:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.data = workdir / "data"
        (self.data / "inputs").mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(workdir / "redis").start()
        self.env = rf_env(self.redis.url, self.data, RF_LOG_LEVEL="WARNING")
        self.settings = Settings(redis_url=self.redis.url, data_dir=self.data,
                                 allowed_input_roots=[self.data / "inputs"], api_keys=[KEY])
        self.client = TestClient(create_app(self.settings)).__enter__()
        self.workers: list[ServiceProcess] = []

    def start_worker(self, core: int) -> ServiceProcess:
        name = f"cpu@bench-chunked-{free_port()}"
        env = dict(self.env, RF_WORKER_NAME=name, HOSTNAME=name.split("@", 1)[-1])
        proc = ServiceProcess(["taskset", "-c", str(core), PYTHON, "-m", "renderfarm.worker", "--pool", "cpu",
                               "--concurrency", "1"], env, self.workdir / "logs" / f"{name}.log").start()
        wait_for(lambda: self.redis.client().exists(f"rf:worker:{name}") or not proc.alive(), 60, what=name)
        if not proc.alive():
            raise RuntimeError(f"worker {name} exited:\n{proc.log()[-3000:]}")
        self.workers.append(proc)
        return proc

    def stop_workers(self) -> None:
        for proc in self.workers:
            proc.stop(signal.SIGTERM, 30)
        self.workers = []

    def cpu_s(self) -> float:
        return sum(tree_cpu_s(w.proc.pid) for w in self.workers)

    def single(self, source: Path) -> dict[str, Any]:
        cpu0, t0 = self.cpu_s(), time.perf_counter()
        response = self.client.post("/v1/jobs", headers=AUTH, json={
            "kind": "transcode", "input": source.as_uri(), "params": {"renditions": [RENDITION]}})
        assert response.status_code == 202, response.text
        job = wait_for(lambda: (j := self.client.get(f"/v1/jobs/{response.json()['id']}", headers=AUTH).json())[
            "status"] in ("succeeded", "failed", "cancelled") and j, 1800, what="single-pass job", interval=0.1)
        wall, cpu = time.perf_counter() - t0, self.cpu_s() - cpu0
        assert job["status"] == "succeeded", job
        out = Path(job["result"]["outputs"][0]["uri"][len("file://"):])
        return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "x264_threads": x264_threads(out)}

    def chunked(self, source: Path, chunk_s: float) -> dict[str, Any]:
        cpu0, t0 = self.cpu_s(), time.perf_counter()
        response = self.client.post("/v1/jobs", headers=AUTH, json={
            "kind": "transcode", "input": source.as_uri(),
            "params": {"renditions": [RENDITION], "chunking": {"chunk_duration_s": chunk_s, "threads": 1}}})
        assert response.status_code == 202, response.text
        flow = wait_for(lambda: (f := self.client.get(f"/v1/workflows/{response.json()['id']}", headers=AUTH).json())[
            "status"] in ("succeeded", "failed", "cancelled") and f, 1800, what="chunked workflow", interval=0.1)
        wall, cpu = time.perf_counter() - t0, self.cpu_s() - cpu0
        assert flow["status"] == "succeeded", flow
        steps = {s["name"]: s for s in flow["steps"]}
        chunk_jobs = [s["job_id"] for n, s in steps.items() if ".chunk-" in n]
        first = self.client.get(f"/v1/jobs/{chunk_jobs[0]}", headers=AUTH).json()
        encoded = Path(first["result"]["outputs"][0]["uri"][len("file://"):])
        return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "chunks": len(chunk_jobs),
                "x264_threads": x264_threads(encoded)}

    def close(self) -> None:
        self.stop_workers()
        self.client.__exit__(None, None, None)
        self.redis.stop()


def spread(values: list[float]) -> float:
    """(max - min) / median: how far apart the rounds were."""
    return (max(values) - min(values)) / statistics.median(values) if values else float("nan")


def measure(workdir: Path, quick: bool) -> dict[str, Any]:
    if len(os.sched_getaffinity(0)) < 2:
        return {"status": "not run", "reason": "needs two cores for two one-core workers"}
    cores = sorted(os.sched_getaffinity(0))[:2]
    duration, chunk_s, rounds = (30.0, 5.0, 1) if quick else (120.0, 10.0, 3)
    farm = Farm(workdir)
    try:
        source = make_long_clip(farm.data / "inputs" / "long.mp4", duration)
        runs: list[dict[str, Any]] = []
        load_before = list(os.getloadavg())
        for _ in range(rounds):
            farm.start_worker(cores[0])
            single = farm.single(source)
            one = farm.chunked(source, chunk_s)
            farm.start_worker(cores[1])
            two = farm.chunked(source, chunk_s)
            farm.stop_workers()
            runs.append({"single_1w": single, "chunked_1w": one, "chunked_2w": two,
                         "scaling": round(one["wall_s"] / two["wall_s"], 4),
                         "overhead": round(one["wall_s"] / single["wall_s"], 4),
                         "overhead_cpu": round(one["cpu_s"] / single["cpu_s"], 4),
                         "loadavg": list(os.getloadavg())})
    finally:
        farm.close()
    scaling = [r["scaling"] for r in runs]
    overhead = [r["overhead"] for r in runs]
    med = statistics.median
    return {"status": "ran", "clip_s": duration, "chunk_duration_s": chunk_s, "rendition": RENDITION,
            "cores": cores, "rounds": runs, "loadavg_before": load_before,
            "scaling": med(scaling), "scaling_spread": round(spread(scaling), 4),
            "overhead": med(overhead), "overhead_spread": round(spread(overhead), 4),
            "overhead_cpu": med([r["overhead_cpu"] for r in runs]),
            "single_1w_wall_s": med([r["single_1w"]["wall_s"] for r in runs]),
            "chunked_1w_wall_s": med([r["chunked_1w"]["wall_s"] for r in runs]),
            "chunked_2w_wall_s": med([r["chunked_2w"]["wall_s"] for r in runs]),
            "single_1w_cpu_s": med([r["single_1w"]["cpu_s"] for r in runs]),
            "chunked_1w_cpu_s": med([r["chunked_1w"]["cpu_s"] for r in runs]),
            "chunked_2w_cpu_s": med([r["chunked_2w"]["cpu_s"] for r in runs]),
            "x264_threads": sorted({r[k]["x264_threads"] for r in runs for k in ("single_1w", "chunked_1w", "chunked_2w")})}


def run(report: Any, quick: bool | None = None) -> dict[str, Any]:
    results, report = measure_in_scratch(report, "chunked", measure, quick)
    if report is None:
        return results
    report.result(SECTION, results)
    if results["status"] != "ran":
        report.not_run(SECTION, results["reason"])
        return results
    n = len(results["rounds"])
    report.check(SECTION, "chunked wall time, 1 worker / 2 workers", results["scaling"], limit=TARGET_SCALING,
                 unit="x", higher_is_better=True,
                 note=f"{results['chunked_1w_wall_s']:.1f} s vs {results['chunked_2w_wall_s']:.1f} s, median of {n}, "
                      f"spread {results['scaling_spread']:.1%}; {results['clip_s']:.0f} s clip, "
                      f"{results['rounds'][0]['chunked_1w']['chunks']} chunks, one core per worker")
    report.check(SECTION, "chunked / single-pass, 1 worker", results["overhead"], limit=TARGET_OVERHEAD, unit="x",
                 note=f"{results['chunked_1w_wall_s']:.1f} s vs {results['single_1w_wall_s']:.1f} s, spread "
                      f"{results['overhead_spread']:.1%}; CPU {results['chunked_1w_cpu_s']:.1f} s vs "
                      f"{results['single_1w_cpu_s']:.1f} s ({results['overhead_cpu']:.3f}x); "
                      f"x264 threads {results['x264_threads']}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    run(results, quick=args.quick)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
