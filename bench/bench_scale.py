#!/usr/bin/env python
"""How costs grow with the work: ``make bench-scale`` (too long for ``make test``).

Starts its own redis-server, API (one uvicorn process) and Celery workers, then at
10^3, 10^4 and 10^5 queued jobs measures:

- fill: jobs/s stored through ``JobStore.submit`` (the store, no HTTP; 4 threads);
- submit saturation: ``POST /v1/jobs`` closed loop, 16 connections, jobs/s; and the same
  through ``POST /v1/jobs:batch`` (batches of BATCH_SIZE, 4 connections), jobs/s;
- submit and status p99 at an offered 200 req/s (open loop, bench/run.py's client),
  also on an empty farm (the baseline of the 1.5x target);
- Redis memory per queued job, and per finished job kept for retention (1,000 jobs
  taken off the queue and finished with a result, as a worker would);
- ``GET /v1/jobs`` p99 for the first page and for a page halfway down the cursor;
- one aging pass, one expiry pass and one orphan scan (the functions beat runs),
  with the Redis commands each sent; before the expiry pass EXPIRED_SAMPLE finished jobs
  pass their retention, so the pass has real work (at most its batch of 500);
- the Celery worker's rate with that many jobs waiting (``probe`` jobs on a tiny clip).

Then the operator's one Redis read for 10, 100 and 1,000 pools (4 queues each), and
what Redis's one thread spends (its own per-call CPU time, INFO commandstats) on one
submit, on a job of a batch, and on one progress PUBLISH with 0, 100 and 1,000 SSE
subscribers: the ceilings of one Redis (``--redis-costs`` measures only these). Each
figure gets a growth class fitted to its three points (bench/growth.py) and, where
the issue sets one, a target verdict. Writes bench/results/scale-latest.json.

    .venv/bin/python bench/bench_scale.py [--levels 1000,10000,100000] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402

from bench.growth import classify_growth  # noqa: E402
from bench.run import API_KEY, load_summary, make_client, open_loop, percentile  # noqa: E402
from renderfarm.core.jobs import JobStatus  # noqa: E402
from renderfarm.core.kinds import get_kind  # noqa: E402
from renderfarm.core.metrics_store import OUTCOMES  # noqa: E402
from renderfarm.core.queues import Priority, redis_list_keys  # noqa: E402
from renderfarm.core.settings import Settings  # noqa: E402
from renderfarm.core.store import INDEX_ALL, JobStore, encode_cursor, inflight_key  # noqa: E402
from renderfarm.core.submit import job_message, new_job  # noqa: E402
from tests.support.media import make_clip  # noqa: E402
from tests.support.procs import RedisServer, ServiceProcess, rf_env, start_api, start_worker  # noqa: E402

LEVELS = (1_000, 10_000, 100_000)
RATE = 200.0
PRIORITIES = (Priority.critical, Priority.high, Priority.normal, Priority.low)
TARGETS = {"latency_vs_empty": 1.5, "list_first_page_p99_ms": 20.0, "bytes_per_queued_job": 2048,
           "operator_read_ms_1000_pools": 50.0}
FINISHED_SAMPLE = 1_000
BATCH_SIZE = 100
EXPIRED_SAMPLE = 1_000
MEMORY_SAMPLE = 5_000
RESULT = {"format": "json", "streams": [{"index": 0, "codec_type": "video"}], "duration": 0.5}


class Farm:
    def __init__(self, workdir: Path, quick: bool):
        self.workdir, self.quick = workdir, quick
        self.server = RedisServer(workdir / "redis").start()
        self.redis = self.server.client()
        self.redis.config_set("appendonly", "no")  # memory and latency, not disk, are measured here
        self.env = rf_env(self.server.url, workdir / "data", RF_API_KEYS=API_KEY, RF_LOG_LEVEL="WARNING")
        (workdir / "data" / "inputs").mkdir(parents=True, exist_ok=True)
        self.clip = make_clip(workdir / "data" / "inputs" / "tiny.mp4", duration=0.5, width=160, height=120, fps=10)
        self.api, self.base_url = start_api(self.env, log_dir=workdir / "logs")
        self.store = JobStore(self.server.client())
        self.kind = get_kind("probe")
        self.rng = random.Random(3)

    def close(self) -> None:
        self.api.stop(signal.SIGTERM, timeout=20)
        self.server.stop()

    # -- filling -----------------------------------------------------------------------------------

    def fill(self, count: int) -> float:
        """``count`` queued probe jobs over the four cpu priorities; returns jobs/s."""
        uri = self.clip.as_uri()
        stores = threading.local()

        def submit_chunk(n: int) -> None:
            store = getattr(stores, "store", None)
            if store is None:
                store = stores.store = JobStore(self.server.client())
            for i in range(n):
                job = new_job(self.kind, input=uri, params={}, priority=PRIORITIES[i % 4])
                store.submit(job, job_message(self.kind, job))

        chunks = [min(1000, count - i) for i in range(0, count, 1000)]
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(submit_chunk, chunks))
        return count / (time.perf_counter() - started)

    def memory(self) -> int:
        return int(self.redis.info("memory")["used_memory"])

    def finished_bytes_per_job(self, sample: int) -> float:
        """Memory of jobs finished and kept for retention: message popped, record kept, indexes moved."""
        uri = self.clip.as_uri()
        jobs = []
        for _ in range(sample):
            job = new_job(self.kind, input=uri, params={}, priority=Priority.low)
            jobs.append(job)
        # Their messages go to a side list and are dropped, as a worker's delivery would take them.
        before = self.memory()
        for job in jobs:
            self.store.submit(job, job_message(self.kind, job, queue="bench.side"))
            self.store.transition(job.id, JobStatus.running, fields={"worker": "bench@pod", "progress": 0})
            self.store.transition(job.id, JobStatus.succeeded,
                                  fields={"progress": 100, "result": {"outputs": [], "metadata": RESULT}})
        self.redis.delete("bench.side")
        return (self.memory() - before) / sample

    def expire_some(self, count: int) -> None:
        """``count`` finished jobs whose 1 s retention has passed (records gone, index entries due)."""
        store = JobStore(self.server.client(), retention_seconds=1)
        for _ in range(count):
            job = new_job(self.kind, input=self.clip.as_uri(), params={}, priority=Priority.low)
            store.submit(job, job_message(self.kind, job, queue="bench.side"))
            store.transition(job.id, JobStatus.running, fields={"worker": "bench@pod"})
            store.transition(job.id, JobStatus.succeeded, fields={"progress": 100})
        self.redis.delete("bench.side")
        time.sleep(1.5)

    # -- HTTP ---------------------------------------------------------------------------------------

    def latency(self, method: str, make_path: Callable[[int], str], body: bytes | None, duration_s: float) -> dict:
        async def go():
            client = make_client("raw", self.base_url)
            try:
                return await open_loop(client, lambda i: client.request(method, make_path(i), body), rate=RATE,
                                       duration_s=duration_s, warmup_s=1.0)
            finally:
                await client.aclose()

        samples = asyncio.run(go())
        summary = load_summary(samples, RATE, duration_s)
        return {"p50_ms": summary["latency_ms"]["p50"], "p99_ms": summary["latency_ms"]["p99"],
                "errors": summary["errors"], "achieved_rps": summary["achieved_rps"],
                "ids": [json.loads(s.body).get("id") for s in samples if s.ok and s.body[:1] == b"{"]}

    def saturation(self, body: bytes, seconds: float, connections: int = 16, path: str = "/v1/jobs",
                   jobs_per_request: int = 1) -> float:
        async def go():
            client = make_client("raw", self.base_url)
            done = 0
            deadline = asyncio.get_running_loop().time() + seconds

            async def worker():
                nonlocal done
                while asyncio.get_running_loop().time() < deadline:
                    status, _ = await client.request("POST", path, body)
                    done += jobs_per_request if 200 <= status < 300 else 0

            try:
                started = asyncio.get_running_loop().time()
                await asyncio.gather(*[worker() for _ in range(connections)])
                return done / (asyncio.get_running_loop().time() - started)
            finally:
                await client.aclose()

        return asyncio.run(go())

    def list_p99(self, cursor: str | None, requests: int) -> dict[str, float]:
        async def go():
            client = make_client("raw", self.base_url)
            path = "/v1/jobs?limit=50" + (f"&cursor={cursor}" if cursor else "")
            times = []
            try:
                for _ in range(requests):
                    started = time.perf_counter()
                    status, _ = await client.request("GET", path)
                    assert status == 200, status
                    times.append(time.perf_counter() - started)
            finally:
                await client.aclose()
            return times

        times = asyncio.run(go())
        return {"p50_ms": percentile(times, 50) * 1000, "p99_ms": percentile(times, 99) * 1000}

    # -- maintenance --------------------------------------------------------------------------------

    def timed_pass(self, fn: Callable[[], Any]) -> dict[str, float]:
        self.redis.config_resetstat()
        self.redis.slowlog_reset()
        self.redis.config_set("slowlog-log-slower-than", "1000")  # commands over 1 ms
        started = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - started
        stats = self.redis.info("commandstats")
        commands = sum(v["calls"] for k, v in stats.items() if not k.startswith(("cmdstat_config", "cmdstat_info",
                                                                                   "cmdstat_slowlog")))
        slow = [entry["duration"] for entry in self.redis.slowlog_get(128)]
        return {"ms": elapsed * 1000, "redis_commands": commands, "longest_command_ms": max(slow, default=0) / 1000}

    # -- the worker ---------------------------------------------------------------------------------

    def dispatch_rate(self, window_s: float) -> float:
        """probe jobs/s of one cpu worker (concurrency 2) taking from the full queues."""
        worker: ServiceProcess = start_worker(self.env, pool="cpu", concurrency=2, log_dir=self.workdir / "logs")

        def done() -> int:
            return sum(int(v) for k, v in self.redis.hgetall(OUTCOMES).items() if k.startswith("probe|"))

        try:
            first = time.monotonic() + 60
            while done() == 0 and time.monotonic() < first:
                time.sleep(0.05)
            time.sleep(1.0)  # past the first jobs' start-up
            n0, t0 = done(), time.monotonic()
            time.sleep(window_s)
            return (done() - n0) / (time.monotonic() - t0)
        finally:
            worker.stop(signal.SIGTERM, timeout=60)


def operator_read_ms(server: RedisServer, pools: int, reads: int, distinct: bool) -> dict[str, float]:
    """The operator's one pipelined read for ``pools`` pools of 4 queues. The CRD admits only
    the 12 real queue names, so real pools share them (``distinct=False``: the read is of
    their union); ``distinct=True`` gives every pool queues of its own, a worst case the CRD
    rules out, to show what the read costs per queue."""
    from renderfarm.core.queues import WorkloadClass, pool_queues
    from renderfarm.operator.queue_reader import QueueReader

    client = redis.Redis(port=server.port, decode_responses=True)
    if distinct:
        per_pool = [[f"scale-pool-{i:04d}.{p.value}" for p in PRIORITIES] for i in range(pools)]
    else:
        classes = list(WorkloadClass)
        per_pool = [pool_queues(classes[i % len(classes)]) for i in range(pools)]
    queues = sorted({q for pool in per_pool for q in pool})  # the tick reads each queue once
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.lpush(redis_list_keys(queue)[0], "m1", "m2")
        pipe.hset(inflight_key(queue), "job", "cpu@pod")
    pipe.execute()
    reader = QueueReader(client)
    reader.read(queues)
    times = []
    for _ in range(reads):
        started = time.perf_counter()
        snapshot = reader.read(queues)
        times.append(time.perf_counter() - started)
        assert snapshot.ok
    client.delete(*[k for q in queues for k in (redis_list_keys(q)[0], inflight_key(q))])
    return {"p50_ms": percentile(times, 50) * 1000, "p99_ms": percentile(times, 99) * 1000}


def redis_costs(server: RedisServer, jobs: int = 2_000) -> dict[str, float]:
    """Redis-side CPU per call (µs, INFO commandstats), so the ceilings of one Redis come
    from measurement: submits/s = 1e6 / µs per submit, and so on."""
    from renderfarm.core.store import events_channel

    client = server.client()
    store = JobStore(server.client())
    kind = get_kind("probe")
    uri = "file:///data/inputs/bench-scale-clip.mp4"

    def usec(command: str) -> float:
        stats = client.info("commandstats").get(f"cmdstat_{command}", {})
        return float(stats.get("usec", 0)) / max(1, int(stats.get("calls", 0)))

    out: dict[str, float] = {}
    jobs_list = [new_job(kind, input=uri, params={}, priority=PRIORITIES[i % 4]) for i in range(jobs)]
    messages = [job_message(kind, job, queue="bench.costs") for job in jobs_list]
    store.submit(jobs_list[0], messages[0])  # loads the script
    client.config_resetstat()
    for job, message in zip(jobs_list[1:], messages[1:]):
        store.submit(job, message)
    out["submit_us"] = usec("evalsha")
    batch_jobs = [new_job(kind, input=uri, params={}, priority=Priority.normal) for _ in range(jobs)]
    batch_messages = [job_message(kind, job, queue="bench.costs") for job in batch_jobs]
    store.submit_batch("warm", "bench", batch_jobs[:1], batch_messages[:1])
    client.config_resetstat()
    for i in range(1, jobs, BATCH_SIZE):
        store.submit_batch(f"b{i}", "bench", batch_jobs[i:i + BATCH_SIZE], batch_messages[i:i + BATCH_SIZE])
    out["batch_job_us"] = usec("evalsha") / BATCH_SIZE
    event = json.dumps({"job_id": "x" * 32, "status": "running", "progress": 42.5, "stage": "encode",
                        "message": "", "at": "2026-01-01T00:00:00+00:00"})
    for subscribers in (0, 100, 1000):
        listeners = []
        for _ in range(subscribers):
            pubsub = redis.Redis(port=server.port).pubsub()
            pubsub.subscribe(events_channel("watched"))
            listeners.append(pubsub)
        for pubsub in listeners:
            pubsub.get_message(timeout=1)  # the subscribe confirmation
        client.config_resetstat()
        for _ in range(200):
            client.publish(events_channel("watched"), event)
        out[f"publish_{subscribers}_subscribers_us"] = usec("publish")
        for pubsub in listeners:
            pubsub.close()
    client.flushall()
    return out


def measure(workdir: Path, levels: tuple[int, ...], quick: bool) -> dict[str, Any]:
    from renderfarm.worker.beat import EXPIRY_BATCH, age_waiting_jobs, recover_orphans

    farm = Farm(workdir, quick)
    duration = 4.0 if quick else 8.0
    body = json.dumps({"kind": "probe", "input": farm.clip.as_uri(), "priority": "normal"}).encode()
    batch_body = json.dumps({"jobs": [json.loads(body)] * BATCH_SIZE}).encode()
    results: dict[str, Any] = {"levels": list(levels), "rate": RATE, "by_level": {}}
    try:
        # Empty farm: the baseline the 1.5x latency target is measured against.
        submit0 = farm.latency("POST", lambda i: "/v1/jobs", body, duration)
        ids0 = submit0.pop("ids")
        status0 = farm.latency("GET", lambda i: f"/v1/jobs/{ids0[i % len(ids0)]}", None, duration)
        status0.pop("ids")
        results["empty"] = {"submit": submit0, "status": status0}
        farm.redis.flushall()
        queued = 0
        for level in levels:
            row: dict[str, Any] = {}
            # The earlier levels' jobs (less those run) are still queued, and the HTTP phases add
            # thousands more: at least MEMORY_SAMPLE jobs are added, so bytes per job is a mean
            # over a sample and not the allocator's rounding of one job.
            added = max(MEMORY_SAMPLE // (10 if quick else 1), level - queued)
            memory_before = farm.memory()
            row["fill_jobs_per_s"] = farm.fill(added)
            row["bytes_per_queued_job"] = (farm.memory() - memory_before) / added
            row["saturation_jobs_per_s"] = farm.saturation(body, 2.0 if quick else 4.0)
            row["batch_saturation_jobs_per_s"] = farm.saturation(batch_body, 2.0 if quick else 4.0, connections=4,
                                                                 path="/v1/jobs:batch", jobs_per_request=BATCH_SIZE)
            submit = farm.latency("POST", lambda i: "/v1/jobs", body, duration)
            ids = submit.pop("ids")
            status = farm.latency("GET", lambda i: f"/v1/jobs/{ids[i % len(ids)]}", None, duration)
            status.pop("ids")
            row["submit"], row["status"] = submit, status
            total = farm.redis.zcard(INDEX_ALL)
            row["jobs_in_store"] = total
            row["list_first_page"] = farm.list_p99(None, 100 if quick else 300)
            middle = farm.redis.zrevrange(INDEX_ALL, total // 2, total // 2, withscores=True)[0]
            row["list_deep_page"] = farm.list_p99(encode_cursor(int(middle[1]), middle[0]), 100 if quick else 300)
            settings = Settings(redis_url=farm.server.url, aging_seconds=600, orphan_after_s=30)
            row["aging_pass"] = farm.timed_pass(lambda: age_waiting_jobs(farm.store, settings))
            farm.expire_some(EXPIRED_SAMPLE // (4 if quick else 1))
            row["expiry_backlog"] = farm.store.expiry_backlog()
            row["expiry_pass"] = farm.timed_pass(lambda: farm.store.expire_due(EXPIRY_BATCH))
            row["orphan_scan"] = farm.timed_pass(lambda: recover_orphans(farm.store, settings))
            row["bytes_per_finished_job"] = farm.finished_bytes_per_job(FINISHED_SAMPLE // (4 if quick else 1))
            queued_now = sum(farm.redis.llen(k) for p in PRIORITIES for k in redis_list_keys(f"cpu.{p.value}"))
            row["waiting_for_dispatch"] = queued_now
            farm.redis.delete(OUTCOMES)
            row["dispatch_jobs_per_s"] = farm.dispatch_rate(4.0 if quick else 8.0)
            queued = farm.redis.zcard("rf:jobs:status:queued")
            results["by_level"][level] = row
            print(f"level {level}: {json.dumps(_short(row))}", flush=True)
        results["operator_read"] = {pools: operator_read_ms(farm.server, pools, 20 if quick else 100, False)
                                    for pools in (10, 100, 1000)}
        results["operator_read_distinct_queues"] = {
            pools: operator_read_ms(farm.server, pools, 20 if quick else 100, True) for pools in (10, 100, 1000)}
        results["redis_costs"] = redis_costs(farm.server)
    finally:
        farm.close()
    return results


def _short(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items() if not isinstance(v, dict)}


# --- the growth table -------------------------------------------------------------------------------


def figures(results: dict[str, Any]) -> list[tuple[str, list[float], str, Callable[[list[float]], str]]]:
    levels = results["levels"]
    rows = [results["by_level"][lv] for lv in levels]
    empty = results["empty"]

    def within(limit: float, what: str) -> Callable[[list[float]], str]:
        base, base_p50 = empty[what]["p99_ms"], empty[what]["p50_ms"]

        def verdict(ys: list[float]) -> str:
            head = f"<= {limit:g}x empty ({base:.2f} ms): "
            # A baseline p99 many times its p50 is the machine stalling, not the farm: the
            # ratio to it cannot be judged.
            if base > 5 * base_p50:
                return head + f"NOISY (empty p99 is {base / base_p50:.0f}x its p50)"
            return head + ("PASS" if ys[-1] <= limit * base else "MISS")

        return verdict

    def at_most(limit: float, unit: str) -> Callable[[list[float]], str]:
        return lambda ys: f"<= {limit:g} {unit}: " + ("PASS" if ys[-1] <= limit else "MISS")

    def bounded(ys: list[float]) -> str:
        # Judged on Redis commands per pass (time on this machine is noise at a few ms).
        growth = classify_growth(levels, ys)["growth"]
        return f"bounded per pass: {'MISS (grows with all jobs)' if growth == 'linear' else 'PASS'}"

    info = lambda ys: ""  # noqa: E731
    return [
        ("fill through JobStore.submit (jobs/s)", [r["fill_jobs_per_s"] for r in rows], "", info),
        ("submit saturation, 1 API process (jobs/s)", [r["saturation_jobs_per_s"] for r in rows], "", info),
        (f"batch submit saturation, {BATCH_SIZE}/batch (jobs/s)",
         [r.get("batch_saturation_jobs_per_s", 0.0) for r in rows], "", info),
        ("submit p50 at 200/s (ms)", [r["submit"]["p50_ms"] for r in rows], "", info),
        ("submit p99 at 200/s (ms)", [r["submit"]["p99_ms"] for r in rows], "",
         within(TARGETS["latency_vs_empty"], "submit")),
        ("status p50 at 200/s (ms)", [r["status"]["p50_ms"] for r in rows], "", info),
        ("status p99 at 200/s (ms)", [r["status"]["p99_ms"] for r in rows], "",
         within(TARGETS["latency_vs_empty"], "status")),
        ("Redis bytes per queued job", [r["bytes_per_queued_job"] for r in rows], "",
         at_most(TARGETS["bytes_per_queued_job"], "B")),
        ("Redis bytes per finished job", [r["bytes_per_finished_job"] for r in rows], "", info),
        ("GET /v1/jobs first page p99 (ms)", [r["list_first_page"]["p99_ms"] for r in rows], "",
         at_most(TARGETS["list_first_page_p99_ms"], "ms")),
        ("GET /v1/jobs deep page p99 (ms)", [r["list_deep_page"]["p99_ms"] for r in rows], "", info),
        ("aging pass (ms)", [r["aging_pass"]["ms"] for r in rows], "", info),
        ("aging pass Redis commands", [float(r["aging_pass"]["redis_commands"]) for r in rows], "", bounded),
        ("expiry pass (ms)", [r["expiry_pass"]["ms"] for r in rows], "", info),
        ("expiry pass Redis commands", [float(r["expiry_pass"]["redis_commands"]) for r in rows], "", bounded),
        ("orphan scan (ms)", [r["orphan_scan"]["ms"] for r in rows], "", info),
        ("orphan scan Redis commands", [float(r["orphan_scan"]["redis_commands"]) for r in rows], "", bounded),
        ("worker dispatch, probe jobs (jobs/s)", [r["dispatch_jobs_per_s"] for r in rows], "", info),
    ]


def table(results: dict[str, Any]) -> str:
    levels = results["levels"]
    head = f"{'figure':44s}" + "".join(f"{lv:>12,}" for lv in levels) + f"  {'growth':7s} target"
    lines = [head, "-" * len(head)]
    for name, ys, _, verdict in figures(results):
        growth = classify_growth(levels, ys)
        lines.append(f"{name:44s}" + "".join(f"{y:12.2f}" for y in ys) + f"  {growth['growth']:7s} {verdict(ys)}")
    empty = results["empty"]
    lines.append(f"empty farm: submit p50 {empty['submit']['p50_ms']:.2f} / p99 {empty['submit']['p99_ms']:.2f} ms, "
                 f"status p50 {empty['status']['p50_ms']:.2f} / p99 {empty['status']['p99_ms']:.2f} ms")
    limit = TARGETS["operator_read_ms_1000_pools"]
    for key, what in (("operator_read", "operator Redis read p99 (ms), pools"),
                      ("operator_read_distinct_queues", "  same, every pool its own 4 queues")):
        reads = {int(k): v for k, v in results[key].items()}
        pools = sorted(reads)
        ys = [reads[p]["p99_ms"] for p in pools]
        growth = classify_growth(pools, ys)["growth"]
        lines.append(f"{what:44s}" + "".join(f"{p:>12,}" for p in pools))
        lines.append(f"{'':44s}" + "".join(f"{y:12.2f}" for y in ys) +
                     f"  {growth:7s} <= {limit:g} ms at 1,000: {'PASS' if ys[-1] <= limit else 'MISS'}")
    lines += _costs_lines(results.get("redis_costs"))
    return "\n".join(lines)


def _costs_lines(costs: dict[str, float] | None) -> list[str]:
    if not costs:
        return []
    return [
        "Redis CPU per call (its one thread):",
        f"  one submit {costs['submit_us']:.0f} us (ceiling {1e6 / costs['submit_us']:,.0f} submits/s); "
        f"a job of a batch {costs['batch_job_us']:.0f} us (ceiling {1e6 / costs['batch_job_us']:,.0f} jobs/s)",
        "  one progress PUBLISH with 0 / 100 / 1,000 subscribers: " +
        " / ".join(f"{costs[f'publish_{n}_subscribers_us']:.1f}" for n in (0, 100, 1000)) + " us",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", default=",".join(str(x) for x in LEVELS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--results-dir", default=str(REPO_ROOT / "bench" / "results"))
    parser.add_argument("--redis-costs", action="store_true", help="measure only Redis's CPU per call and exit")
    parser.add_argument("--table", metavar="JSON", help="print the table of a saved run (scale-latest.json) and exit")
    args = parser.parse_args()
    if args.table:
        saved = json.loads(Path(args.table).read_text())
        saved["by_level"] = {int(k): v for k, v in saved["by_level"].items()}
        print(table(saved))
        return
    if args.redis_costs:
        workdir = Path(tempfile.mkdtemp(prefix="rf-bench-costs-"))
        server = RedisServer(workdir / "redis").start()
        try:
            server.client().config_set("appendonly", "no")
            print("\n".join(_costs_lines(redis_costs(server))))
        finally:
            server.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        return
    levels = tuple(int(x) for x in args.levels.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="rf-bench-scale-"))
    try:
        results = measure(workdir, levels, args.quick)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["growth"] = {name: classify_growth(levels, ys) for name, ys, _, _ in figures(results)}
    out = Path(args.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale-latest.json").write_text(json.dumps(results, indent=1, default=str))
    print(table(results))


if __name__ == "__main__":
    main()
