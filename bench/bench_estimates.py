#!/usr/bin/env python
"""Duration estimates: how far a job's estimate is from how long it then took.

A real redis-server and one CPU worker (one job at a time, so runs do not share the
CPU with each other). Clips of 1 to 30 s are probed once (the farm then knows their
lengths, as in a workflow whose first step is probe). A warm-up runs each job shape
on a short and a long clip; then a seeded random mix of transcodes (one or two
renditions), audio extractions and thumbnail sets on every clip length runs one after
the other. Before each is submitted the bench reads the estimate the farm gives a job
of that kind, params and input (``renderfarm.core.estimates.for_specs``, the same fit
a queued job's ``estimated_duration_s`` comes from); afterwards it reads the job's
actual run time (``started_at`` -> ``finished_at``). It reports the median absolute
percentage error over the scored jobs, with its 90th percentile, per kind.

``run(report)`` reports to bench/run.py's Report (section ``estimates``) or fills a
dict; standalone: ``python bench/bench_estimates.py [--quick]`` prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import statistics
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import redis  # noqa: E402

from renderfarm.core import estimates  # noqa: E402
from renderfarm.core.estimates import actual_duration  # noqa: E402
from renderfarm.core.jobs import JobStatus  # noqa: E402
from renderfarm.core.kinds import get_kind  # noqa: E402
from renderfarm.core.store import JobStore  # noqa: E402
from tests.support.jobs import TERMINAL, submit  # noqa: E402
from tests.support.media import make_clip  # noqa: E402
from bench.scratch import measure_in_scratch  # noqa: E402
from tests.support.procs import RedisServer, rf_env, start_worker, wait_for  # noqa: E402

SECTION = "estimates"
CLIP_SECONDS = (1, 2, 4, 6, 10, 15, 30)
# (kind, params) mixes: the shapes the estimates learn separately.
MIX: tuple[tuple[str, dict[str, Any]], ...] = (
    ("transcode", {"renditions": [{"height": 240}]}),
    ("transcode", {"renditions": [{"height": 180}, {"height": 240}]}),
    ("extract_audio", {}),
    ("thumbnail", {"count": 3}),
)


def _run_one(store: JobStore, kind: str, clip: Path, params: dict[str, Any]):
    job = submit(store, kind, clip, params)
    done = wait_for(lambda: (found := store.get(job.id)).status in TERMINAL and found, 300, interval=0.05,
                    what=f"{kind} job")
    if done.status != JobStatus.succeeded:
        raise RuntimeError(f"{kind} job ended {done.status}: {done.error}")
    return done


def _learned_count(store: JobStore) -> int:
    return sum(fit.n for field, fit in estimates.learned(store.redis).items() if field.startswith("pool|"))


def measure(workdir: Path, quick: bool) -> dict[str, Any]:
    server = RedisServer(workdir / "redis").start()
    data_dir = workdir / "data"
    (data_dir / "inputs").mkdir(parents=True)
    env = rf_env(server.url, data_dir)
    worker = start_worker(env, concurrency=1, log_dir=workdir / "logs")
    store = JobStore(redis.Redis.from_url(server.url, decode_responses=True))
    try:
        clips = {seconds: make_clip(data_dir / "inputs" / f"clip-{seconds}.mp4", duration=seconds)
                 for seconds in CLIP_SECONDS}
        learned = 0

        def run_and_learn(kind, clip, params):
            """Run one job and wait until it is learned (just after the job's own write),
            so the next job's estimate has it."""
            nonlocal learned
            done = _run_one(store, kind, clip, params)
            learned += 1
            wait_for(lambda: _learned_count(store) >= learned, 10, what="the run to be learned")
            return done

        for clip in clips.values():
            run_and_learn("probe", clip, {})
        for kind, params in MIX:  # warm-up: each shape on a short and a long clip (not scored)
            for seconds in (CLIP_SECONDS[1], CLIP_SECONDS[-2]):
                run_and_learn(kind, clips[seconds], params)

        rng = random.Random(20261202)
        plan = [(kind, params, seconds) for kind, params in MIX for seconds in CLIP_SECONDS]
        plan = plan * (1 if quick else 2)
        rng.shuffle(plan)
        samples = []
        for kind, params, seconds in plan:
            normalized = get_kind(kind).params_model.model_validate(params).model_dump(mode="json")
            [estimate] = estimates.for_specs(store.redis, [(kind, normalized, clips[seconds].as_uri())])
            done = run_and_learn(kind, clips[seconds], params)
            actual = actual_duration(done)
            if estimate is None or not actual:
                continue
            samples.append({"kind": kind, "shape": json.dumps(params, sort_keys=True), "media_s": seconds,
                            "estimated_s": round(estimate, 3), "actual_s": round(actual, 3),
                            "ape_pct": round(100 * abs(estimate - actual) / actual, 2)})
    finally:
        worker.stop(signal.SIGTERM, 30)
        server.stop()
    errors = [s["ape_pct"] for s in samples]
    by_kind = {}
    for kind in sorted({s["kind"] for s in samples}):
        mine = [s["ape_pct"] for s in samples if s["kind"] == kind]
        by_kind[kind] = {"jobs": len(mine), "median_ape_pct": round(statistics.median(mine), 2)}
    return {
        "jobs_scored": len(samples),
        "median_ape_pct": round(statistics.median(errors), 2) if errors else None,
        "p90_ape_pct": round(statistics.quantiles(errors, n=10)[-1], 2) if len(errors) >= 2 else None,
        "actual_s_range": [min(s["actual_s"] for s in samples), max(s["actual_s"] for s in samples)] if samples else None,
        "by_kind": by_kind,
        "samples": samples,
    }


def run(report: Any, quick: bool | None = None) -> dict[str, Any]:
    results, report = measure_in_scratch(report, "estimates", measure, quick)
    if report is None:
        return results
    report.result(SECTION, results)
    low, high = results["actual_s_range"] or (0, 0)
    report.row(SECTION, "duration estimate error (median absolute %)", measured=f"{results['median_ape_pct']} %",
               note=f"p90 {results['p90_ape_pct']} % over {results['jobs_scored']} jobs of {low:.2f}-{high:.2f} s; "
                    + ", ".join(f"{k} {v['median_ape_pct']} %" for k, v in results["by_kind"].items()))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {}
    run(out, quick=args.quick)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
