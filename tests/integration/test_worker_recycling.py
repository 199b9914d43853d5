"""Worker recycling against real Celery workers: a pool process is replaced after
RF_MAX_TASKS_PER_CHILD jobs, or after a job leaves it above RF_MAX_MEMORY_PER_CHILD_MB,
with no job lost. Which process ran a job is read from its attempt token (the pool
process id comes first: renderfarm.core.store.new_attempt_token)."""

from __future__ import annotations

import re
import signal
from datetime import datetime

import pytest

from renderfarm.core.jobs import JobStatus
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobStore, job_key, token_pid
from renderfarm.core.redis_conn import redis_client as make_redis
from tests.support.jobs import TERMINAL, submit, wait_status
from tests.support.media import make_clip
from tests.support.procs import ServiceProcess, start_worker


@pytest.fixture
def store(rf_settings_env):
    settings = Settings()
    return JobStore(make_redis(settings, socket_timeout_s=5), retention_seconds=settings.retention_seconds)


@pytest.fixture
def clip(data_dir):
    return make_clip(data_dir / "inputs" / "clip.mp4", duration=1)


@pytest.fixture
def workers():
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop(signal.SIGKILL, 5)


def run_jobs_one_by_one(store: JobStore, clip, count: int) -> list[int]:
    """Each job waits for the one before: the pids are in run order. Returns them."""
    pids = []
    for _ in range(count):
        job = submit(store, "probe", clip)
        final = wait_status(store, job.id, TERMINAL, timeout=90)
        assert final.status == JobStatus.succeeded and final.attempts == 1, final.error
        pids.append(token_pid(store.redis.hget(job_key(job.id), "last_attempt")))
    return pids


def test_max_tasks_per_child_replaces_a_pool_process_after_two_jobs_and_loses_none(store, rf_settings_env, workers,
                                                                                   clip):
    worker = start_worker(dict(rf_settings_env, RF_MAX_TASKS_PER_CHILD="2"), concurrency=1)
    workers.append(worker)
    # Six at once too: none lost while processes come and go under a backlog.
    burst = [submit(store, "probe", clip) for _ in range(6)]
    finals = [wait_status(store, job.id, TERMINAL, timeout=120) for job in burst]
    assert [(f.status, f.attempts) for f in finals] == [(JobStatus.succeeded, 1)] * 6
    burst_pids = [token_pid(store.redis.hget(job_key(f.id), "last_attempt")) for f in
                  sorted(finals, key=lambda f: f.started_at)]
    assert all(burst_pids.count(pid) == 2 for pid in burst_pids), burst_pids

    pids = run_jobs_one_by_one(store, clip, 4)
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[1] != pids[2], pids
    assert len(set(burst_pids + pids)) == 5
    assert "replacement process" in worker.log() and "is up (no model to warm)" in worker.log()
    assert "pool cpu: a pool process is replaced after 2 jobs, or above 1024 MB resident after a job" in worker.log()


def test_without_a_task_limit_the_same_process_runs_every_job(store, rf_settings_env, workers, clip):
    workers.append(start_worker(dict(rf_settings_env, RF_MAX_TASKS_PER_CHILD="0", RF_MAX_MEMORY_PER_CHILD_MB="0"),
                                concurrency=1))
    pids = run_jobs_one_by_one(store, clip, 3)
    assert len(set(pids)) == 1, pids


def test_a_memory_cap_below_what_a_job_leaves_replaces_the_process_and_the_next_job_succeeds(store, rf_settings_env,
                                                                                          workers, clip):
    # 1 MB: below what any job leaves resident in a Python pool process.
    worker = start_worker(dict(rf_settings_env, RF_MAX_TASKS_PER_CHILD="0", RF_MAX_MEMORY_PER_CHILD_MB="1"),
                          concurrency=1)
    workers.append(worker)
    pids = run_jobs_one_by_one(store, clip, 3)
    assert len(set(pids)) == 3, pids  # a new process after each job, and each next job succeeded
    assert worker.log().count("replacement process") >= 2


def test_a_memory_cap_above_what_jobs_leave_keeps_the_process(store, rf_settings_env, workers, clip):
    workers.append(start_worker(dict(rf_settings_env, RF_MAX_TASKS_PER_CHILD="0", RF_MAX_MEMORY_PER_CHILD_MB="4096"),
                                concurrency=1))
    pids = run_jobs_one_by_one(store, clip, 3)
    assert len(set(pids)) == 1, pids


@pytest.mark.gpu_models
def test_a_replacement_gpu_pool_process_warms_its_model_before_it_takes_a_job(store, rf_settings_env, workers, data_dir):
    import subprocess

    speech = data_dir / "inputs" / "sentence.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(speech), "A light in the dark is a simple promise."],
                   check=True)
    env = dict(rf_settings_env, HF_HUB_OFFLINE="1", RF_MAX_TASKS_PER_CHILD="1")
    worker = start_worker(env, pool="gpu-transcribe")
    workers.append(worker)
    pids = []
    for _ in range(2):
        job = submit(store, "transcribe", speech, {"formats": ["json"]})
        final = wait_status(store, job.id, TERMINAL, timeout=240)
        assert final.status == JobStatus.succeeded, f"{final.error}\n{worker.log()[-3000:]}"
        pids.append(token_pid(store.redis.hget(job_key(job.id), "last_attempt")))
    assert pids[0] != pids[1]
    log = worker.log()
    # The second job's process came up only after its model was warm, and said so.
    assert f"replacement process {pids[1]} warmed its model in" in log, log[-3000:]
    # The replacement's model was loaded (its second "loaded" line) before the job was claimed.
    stamps = re.findall(r"^\[([\d-]+ [\d:,]+): INFO/[^\]]*\] whisper model .* loaded on", log, re.M)
    assert len(stamps) == 2, log[-3000:]
    loaded_at = datetime.strptime(stamps[1], "%Y-%m-%d %H:%M:%S,%f").astimezone()  # the log's local time
    assert loaded_at <= final.started_at, (loaded_at, final.started_at)
    assert f"replacement process {pids[0]}" not in log
