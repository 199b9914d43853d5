"""Storage overhead: a transcode job with its input and outputs in S3, divided by
the same job on the filesystem (``make bench`` section ``storage``).

Two real workers on one redis-server, each on its own database so neither takes
the other's jobs: one keeps media on the filesystem, one reads ``s3://`` and
uploads its outputs to a local SeaweedFS (``make s3-tools``). Repetitions are
interleaved (filesystem, S3, filesystem, ...) so drift in the machine's load
hits both alike; each pair gives one ratio of job run times (claim to finish:
fetch, transcode, publish), and the median ratio is checked against the target
with its spread beside it.
"""

from __future__ import annotations

import signal
import statistics
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

SECTION = "storage"
TARGET = 1.15
BUCKET = "rf-bench"


def _run_once(store, job_input: str, params: dict) -> float:
    from renderfarm.core.jobs import JobStatus
    from tests.support.jobs import TERMINAL, submit, wait_status

    job = submit(store, "transcode", job_input, params)
    done = wait_status(store, job.id, TERMINAL, timeout=900)
    if done.status != JobStatus.succeeded:
        raise RuntimeError(f"transcode of {job_input} ended {done.status}: {done.error}")
    return (done.finished_at - done.started_at).total_seconds()


def run(report) -> dict[str, Any]:
    import redis

    from renderfarm.cli.s3server import WeedS3, weed_binary
    from renderfarm.core.store import JobStore
    from tests.support.media import make_clip
    from tests.support.procs import RedisServer, rf_env, start_worker

    if not weed_binary().is_file():
        report.not_run(SECTION, f"{weed_binary()} is missing: run `make s3-tools`")
        return {"status": "not run"}
    work = Path(report.workdir) / "storage"
    pairs = 2 if report.quick else 5
    clip_s = 10.0 if report.quick else 60.0
    params = {"renditions": [{"height": 240}]}
    redis_server = RedisServer(work / "redis").start()
    weed = WeedS3(work / "weed", access_key="rf-bench", secret_key="rf-bench-secret-0123456789",
                  buckets=[BUCKET]).start()
    workers = []
    try:
        data_fs, data_s3 = work / "fs" / "data", work / "s3" / "data"
        clip = make_clip(data_fs / "inputs" / "clip.mp4", duration=clip_s, width=640, height=360)
        (data_s3 / "inputs").mkdir(parents=True, exist_ok=True)
        weed.client().upload_file(str(clip), BUCKET, "inputs/clip.mp4")
        base = redis_server.url.rsplit("/", 1)[0]
        env_fs = rf_env(f"{base}/0", data_fs)
        env_s3 = rf_env(f"{base}/1", data_s3, **weed.env(BUCKET, RF_S3_ALLOWED_INPUT_BUCKETS=BUCKET))
        workers = [start_worker(env_fs, name="cpu@bench-fs"), start_worker(env_s3, name="cpu@bench-s3")]
        store_fs = JobStore(redis_server.client())
        store_s3 = JobStore(redis.Redis.from_url(f"{base}/1", decode_responses=True))
        # One untimed pair: page cache, the first job in each pool child.
        _run_once(store_fs, clip.as_uri(), params)
        _run_once(store_s3, f"s3://{BUCKET}/inputs/clip.mp4", params)
        fs_s, s3_s, ratios = [], [], []
        for _ in range(pairs):
            fs = _run_once(store_fs, clip.as_uri(), params)
            s3 = _run_once(store_s3, f"s3://{BUCKET}/inputs/clip.mp4", params)
            fs_s.append(fs)
            s3_s.append(s3)
            ratios.append(s3 / fs)
    finally:
        for worker in workers:
            worker.stop(signal.SIGTERM, 30)
        weed.stop()
        redis_server.stop()
    note = (f"{clip_s:g} s 640x360 clip -> 240p; filesystem median {statistics.median(fs_s):.2f} s, "
            f"S3 median {statistics.median(s3_s):.2f} s; ratios {', '.join(f'{r:.3f}' for r in ratios)}")
    report.check_spread(SECTION, "s3 / filesystem transcode run time", ratios, limit=TARGET, margin=0.10,
                        ratio="s3/fs", note=note)
    return {"pairs": pairs, "clip_s": clip_s, "filesystem_s": fs_s, "s3_s": s3_s, "ratios": ratios,
            "ratio_median": statistics.median(ratios), "target": TARGET}
