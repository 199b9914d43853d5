"""Jobs through real Celery worker processes, a real redis-server and real ffmpeg:
priority order, pause/resume, cancel (queued and running), retries with backoff,
dead-letter, worker loss, Redis restart, retention expiry."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psutil
import pytest

from renderfarm.core.jobs import JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.queues import Priority
from renderfarm.core.redis_conn import redis_client as make_redis
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobStore, events_channel
from renderfarm.worker.beat import recover_orphans
from tests.support.jobs import TERMINAL, submit, wait_status
from tests.support.flaky import FlakyServer
from tests.support.media import ffprobe, make_clip, stream
from tests.support.monitoring import api_samples
from tests.support.procs import ServiceProcess, PYTHON, start_worker, wait_for



@pytest.fixture
def store(rf_settings_env):
    settings = Settings()
    return JobStore(make_redis(settings, socket_timeout_s=5), retention_seconds=settings.retention_seconds)


@pytest.fixture
def clip(data_dir):
    return make_clip(data_dir / "inputs" / "clip.mp4", duration=1)


@pytest.fixture
def long_clip(data_dir):
    # Long enough to be caught running (a few seconds of x264 work on this machine).
    return make_clip(data_dir / "inputs" / "long.mp4", duration=30, width=640, height=360)


@pytest.fixture
def workers():
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop(signal.SIGKILL, 5)


def test_transcode_through_a_worker_writes_checked_outputs(store, rf_settings_env, workers, clip, data_dir):
    workers.append(start_worker(rf_settings_env))
    job = submit(store, "transcode", clip, {"renditions": [{"height": 120}, {"height": 180, "video_bitrate_kbps": 300}]})
    done = wait_status(store, job.id, TERMINAL)
    assert done.status == JobStatus.succeeded, done.error
    assert done.attempts == 1 and done.progress == 100
    names = sorted(o.name for o in done.result.outputs)
    assert names == ["120p.mp4", "180p.mp4"]
    for output in done.result.outputs:
        path = Path(output.uri.removeprefix("file://"))
        info = ffprobe(path)
        video = stream(info, "video")
        assert video["codec_name"] == "h264" and int(video["height"]) == int(output.name.split("p")[0])
        assert stream(info, "audio")["codec_name"] == "aac"
        assert abs(float(info["format"]["duration"]) - 1.0) <= 0.1
    # Nothing temporary left behind.
    assert not [p for p in (data_dir / "outputs" / job.id).iterdir() if p.name.startswith(".")]
    assert not list((data_dir / "work").iterdir())


def test_worker_serves_its_own_metrics(store, rf_settings_env, workers, long_clip):
    import httpx

    from tests.support.procs import free_port

    port = free_port()
    workers.append(start_worker(dict(rf_settings_env, RF_WORKER_METRICS_PORT=str(port)), concurrency=1))
    url = f"http://127.0.0.1:{port}/metrics"
    assert 'renderfarm_worker_busy{pool="cpu"' in httpx.get(url).text
    job = submit(store, "transcode", long_clip, {"renditions": [{"height": 144}]})
    wait_for(lambda: store.get(job.id).status == JobStatus.running, 60, what="job to start")
    busy = [line for line in httpx.get(url).text.splitlines() if line.startswith("renderfarm_worker_busy{")]
    assert busy and busy[0].endswith(" 1.0")
    store.transition(job.id, JobStatus.cancelled)


def test_strict_priority_order(store, rf_settings_env, workers, clip):
    jobs = []
    for priority in (Priority.low, Priority.normal, Priority.high, Priority.critical):
        for _ in range(3):
            jobs.append(submit(store, "probe", clip, priority=priority))
    workers.append(start_worker(rf_settings_env, concurrency=1))
    finished = [wait_status(store, job.id, TERMINAL) for job in jobs]
    assert all(job.status == JobStatus.succeeded for job in finished)
    by_start = [job.priority for job in sorted(finished, key=lambda j: j.started_at)]
    assert by_start == [Priority.critical] * 3 + [Priority.high] * 3 + [Priority.normal] * 3 + [Priority.low] * 3


def test_paused_queue_is_not_consumed_even_by_new_workers_and_resumes(store, rf_settings_env, workers, clip):
    workers.append(start_worker(rf_settings_env, concurrency=1))
    store.set_paused("cpu.normal", True)
    time.sleep(1.5)  # the worker drops the queue within a second
    paused_jobs = [submit(store, "probe", clip) for _ in range(3)]
    other = submit(store, "probe", clip, priority=Priority.high)
    assert wait_status(store, other.id, TERMINAL).status == JobStatus.succeeded  # other queues still flow
    workers.append(start_worker(rf_settings_env, concurrency=1))  # a worker started later honours the pause
    time.sleep(3)
    assert all(store.get(job.id).status == JobStatus.queued for job in paused_jobs)
    assert store.queue_stats(["cpu.normal"])[0].depth == 3
    store.set_paused("cpu.normal", False)
    assert all(wait_status(store, job.id, TERMINAL).status == JobStatus.succeeded for job in paused_jobs)
    assert all(store.get(job.id).attempts == 1 for job in paused_jobs)


def test_cancelled_queued_job_never_runs(store, rf_settings_env, workers, clip):
    store.set_paused("cpu.low", True)
    job = submit(store, "probe", clip, priority=Priority.low)
    keep = submit(store, "probe", clip, priority=Priority.low)
    store.transition(job.id, JobStatus.cancelled)
    workers.append(start_worker(rf_settings_env))
    store.set_paused("cpu.low", False)
    assert wait_status(store, keep.id, TERMINAL).status == JobStatus.succeeded
    cancelled = store.get(job.id)
    assert cancelled.status == JobStatus.cancelled and cancelled.attempts == 0 and cancelled.started_at is None


def _ffmpeg_children(worker: ServiceProcess) -> list[psutil.Process]:
    return [p for p in psutil.Process(worker.proc.pid).children(recursive=True) if p.name() == "ffmpeg"]


def test_cancelling_a_running_job_stops_ffmpeg(store, rf_settings_env, workers, long_clip, clip, data_dir):
    worker = start_worker(rf_settings_env, concurrency=1)
    workers.append(worker)
    job = submit(store, "transcode", long_clip, {"renditions": [{"height": 360, "preset": "medium"}]})
    wait_for(lambda: store.get(job.id).status == JobStatus.running and store.get(job.id).progress > 0, 60,
             what="transcode to make progress")
    assert _ffmpeg_children(worker)
    store.transition(job.id, JobStatus.cancelled)  # what POST /v1/jobs/{id}/cancel does
    wait_for(lambda: not _ffmpeg_children(worker), 10, what="ffmpeg to stop")
    wait_for(lambda: store.get(job.id).stage == "cancelled", 10, what="worker to acknowledge the cancel")
    final = store.get(job.id)
    assert final.status == JobStatus.cancelled and final.result is None
    assert not (data_dir / "outputs" / job.id / "360p.mp4").exists()
    # The worker is free again.
    assert wait_status(store, submit(store, "probe", clip).id, TERMINAL).status == JobStatus.succeeded


@pytest.fixture
def flaky(clip):
    server = FlakyServer(clip.read_bytes())
    yield server
    server.close()


def test_transient_errors_retry_with_backoff_then_succeed(store, rf_settings_env, workers, flaky):
    flaky.failures_left = 2
    env = dict(rf_settings_env, RF_ALLOW_PRIVATE_FETCH="true")
    workers.append(start_worker(env))
    job = submit(store, "probe", flaky.url)
    seen = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        current = store.get(job.id)
        seen.add(current.status)
        if current.status in TERMINAL:
            break
        time.sleep(0.05)
    assert current.status == JobStatus.succeeded, current.error
    assert current.attempts == 3 and JobStatus.retrying in seen
    assert current.result.metadata  # probe output present
    # Counted: two retries of probe for a transient error, one success, and three starts
    # out of the queue (the first from the submit, two after a retry fell due).
    samples = api_samples(store)
    retries = {labels: v for (name, labels), v in samples.items() if name == "renderfarm_job_retries_total" and v}
    assert retries == {(("error_type", "transient"), ("kind", "probe"), ("pool", "cpu")): 2}
    assert samples[("renderfarm_job_outcomes_total", (("error_type", "none"), ("kind", "probe"),
                                                      ("queue", "cpu.normal"), ("status", "succeeded")))] == 1
    wait = (("pool", "cpu"), ("priority", "normal"), ("queue", "cpu.normal"))
    assert samples[("renderfarm_queue_wait_seconds_count", wait)] == 3
    # A retry's wait counts from when its backoff fell due, not from the submit: all three
    # started within 2 s (counted from the submit, the third would have waited >= 3 s).
    assert samples[("renderfarm_queue_wait_seconds_bucket", tuple(sorted(wait + (("le", "2.0"),))))] == 3


def test_poison_job_fails_for_good_into_dead_letter(store, rf_settings_env, workers, flaky):
    flaky.failures_left = -1  # always 503: transient every time
    env = dict(rf_settings_env, RF_ALLOW_PRIVATE_FETCH="true")
    workers.append(start_worker(env))
    job = submit(store, "probe", flaky.url)
    final = wait_status(store, job.id, TERMINAL, timeout=90)
    assert final.status == JobStatus.failed and final.error.type == "transient" and final.error.retryable is False
    assert final.attempts == 1 + get_kind("probe").retry.max_retries
    assert store.dead_letter() == [job.id]
    failed = {labels: v for (name, labels), v in api_samples(store).items()
              if name == "renderfarm_job_outcomes_total" and dict(labels)["status"] == "failed" and v}
    assert failed == {(("error_type", "transient"), ("kind", "probe"), ("queue", "cpu.normal"), ("status", "failed")): 1}


def test_corrupt_media_fails_invalid_media_without_retry(store, rf_settings_env, workers, data_dir):
    bad = data_dir / "inputs" / "corrupt.mp4"
    bad.write_bytes(b"\x00not a video at all" * 500)
    workers.append(start_worker(rf_settings_env))
    job = submit(store, "transcode", bad, {"renditions": [{"height": 120}]})
    final = wait_status(store, job.id, TERMINAL)
    assert final.status == JobStatus.failed and final.error.type == "invalid_media"
    assert final.attempts == 1
    assert job.id in store.dead_letter()


def test_job_of_a_killed_worker_is_recovered(store, rf_settings_env, workers, long_clip):
    env = dict(rf_settings_env, RF_ORPHAN_AFTER_S="1")
    doomed = start_worker(env, concurrency=1)
    workers.append(doomed)
    job = submit(store, "transcode", long_clip, {"renditions": [{"height": 144, "preset": "ultrafast"}]})
    wait_for(lambda: store.get(job.id).status == JobStatus.running, 60, what="job to start")
    doomed.kill()  # SIGKILL the whole worker: no chance to hand the job back
    settings = Settings(orphan_after_s=1)
    wait_for(lambda: recover_orphans(store, settings) == [job.id], 20, interval=0.5, what="orphan recovery")
    assert store.get(job.id).status == JobStatus.retrying
    workers.append(start_worker(env, concurrency=1))
    final = wait_status(store, job.id, TERMINAL, timeout=120)
    assert final.status == JobStatus.succeeded and final.attempts == 2


def test_sigterm_lets_the_running_job_finish(store, rf_settings_env, workers, data_dir):
    clip = make_clip(data_dir / "inputs" / "mid.mp4", duration=8, width=640, height=360)
    worker = start_worker(rf_settings_env, concurrency=1)
    workers.append(worker)
    job = submit(store, "transcode", clip, {"renditions": [{"height": 240}]})
    wait_for(lambda: store.get(job.id).status == JobStatus.running, 60, what="job to start")
    # Only the main process, as Kubernetes does (PID 1); Celery's warm shutdown lets the job finish.
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(timeout=120)
    final = store.get(job.id)
    assert final.status == JobStatus.succeeded and final.attempts == 1


def test_jobs_survive_a_redis_restart(store, rf_settings_env, workers, clip, redis_server):
    jobs = [submit(store, "probe", clip) for _ in range(3)]
    redis_server.stop()
    redis_server.start()  # same port and folder: the append-only file brings everything back
    assert [store.get(job.id).status for job in jobs] == [JobStatus.queued] * 3
    workers.append(start_worker(rf_settings_env))
    assert all(wait_status(store, job.id, TERMINAL).status == JobStatus.succeeded for job in jobs)
    # The worker rides out another restart and keeps consuming.
    redis_server.stop()
    redis_server.start()
    late = submit(store, "probe", clip)
    assert wait_status(store, late.id, TERMINAL, timeout=90).status == JobStatus.succeeded


def test_finished_jobs_expire_after_retention(rf_settings_env, workers, clip):
    env = dict(rf_settings_env, RF_RETENTION_SECONDS="2")
    settings = Settings(retention_seconds=2)
    store = JobStore(make_redis(settings, socket_timeout_s=5), retention_seconds=2)
    workers.append(start_worker(env))
    job = submit(store, "probe", clip)
    assert wait_status(store, job.id, TERMINAL).status == JobStatus.succeeded
    assert 0 < store.redis.ttl(f"rf:job:{job.id}") <= 2
    wait_for(lambda: not store.redis.exists(f"rf:job:{job.id}"), 5, what="expiry")
    assert store.purge_expired_index_entries() >= 3  # all, status and kind indexes
    assert store.list().jobs == [] and store.counts_by_status()["succeeded"] == 0


def test_progress_events_are_published_and_kept(store, rf_settings_env, workers, data_dir):
    clip = make_clip(data_dir / "inputs" / "p.mp4", duration=6, width=640, height=360)
    pubsub = store.redis.pubsub()
    workers.append(start_worker(rf_settings_env))
    job = submit(store, "transcode", clip, {"renditions": [{"height": 240}]})
    pubsub.subscribe(events_channel(job.id))
    events = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
        if message:
            events.append(json.loads(message["data"]))
            if events[-1]["status"] in ("succeeded", "failed"):
                break
    assert events[-1]["status"] == "succeeded"
    running = [e["progress"] for e in events if e["status"] == "running"]
    assert len(running) >= 2 and running == sorted(running)
    assert store.get(job.id).progress == 100


def test_waiting_low_priority_jobs_age_up_and_stay_cancellable(store, clip):
    from renderfarm.worker.beat import age_waiting_jobs

    settings = Settings(aging_seconds=1)
    aged = submit(store, "probe", clip, priority=Priority.low)
    fresh_wait = [submit(store, "probe", clip, priority=Priority.low)]
    assert age_waiting_jobs(store, settings) == 0  # nothing has waited a full period yet
    time.sleep(1.1)
    fresh_wait.append(submit(store, "probe", clip, priority=Priority.low))
    moved = age_waiting_jobs(store, settings)
    assert moved == 2  # the two older jobs, oldest first; the new one waits its turn
    assert store.get(aged.id).queue == "cpu.normal" and store.get(fresh_wait[1].id).queue == "cpu.low"
    assert store.redis.llen("cpu.normal") == 2 and store.redis.llen("cpu.low") == 1
    # The moved message sits where it is consumed next (kombu pops from the right).
    assert json.loads(store.redis.lindex("cpu.normal", -1))["headers"]["id"] == aged.id
    time.sleep(1.0)
    age_waiting_jobs(store, settings)
    assert store.get(aged.id).queue == "cpu.high"  # one priority per period waited
    high = [json.loads(m)["headers"]["id"] for m in store.redis.lrange("cpu.high", 0, -1)]
    assert high == [fresh_wait[0].id, aged.id]  # still oldest first
    # A moved job is still cancelled exactly: its message leaves the queue it is in now.
    store.transition(aged.id, JobStatus.cancelled)
    assert [json.loads(m)["headers"]["id"] for m in store.redis.lrange("cpu.high", 0, -1)] == [fresh_wait[0].id]
    # A paused queue keeps its jobs however long they wait.
    store.set_paused("cpu.low", True)
    held = submit(store, "probe", clip, priority=Priority.low)
    time.sleep(1.1)
    age_waiting_jobs(store, settings)
    assert store.get(held.id).queue == "cpu.low" and store.redis.llen("cpu.low") == 1


def test_an_aged_job_runs_from_the_queue_it_moved_to(store, rf_settings_env, workers, clip):
    from renderfarm.worker.beat import age_waiting_jobs

    job = submit(store, "probe", clip, priority=Priority.low)
    time.sleep(1.1)
    assert age_waiting_jobs(store, Settings(aging_seconds=1)) == 1 and store.get(job.id).queue == "cpu.normal"
    store.set_paused("cpu.normal", True)  # paused after the move: the job's message still says cpu.low
    workers.append(start_worker(rf_settings_env))
    time.sleep(2)
    assert store.get(job.id).status == JobStatus.queued  # its new queue is paused, so it waits
    store.set_paused("cpu.normal", False)
    done = wait_status(store, job.id, TERMINAL)
    assert done.status == JobStatus.succeeded and done.attempts == 1


def test_jobs_aged_in_a_later_pass_queue_behind_those_aged_earlier(store, clip):
    from renderfarm.worker.beat import age_waiting_jobs

    settings = Settings(aging_seconds=1)
    older = submit(store, "probe", clip, priority=Priority.low)
    time.sleep(0.5)
    younger = submit(store, "probe", clip, priority=Priority.low)
    time.sleep(0.6)
    assert age_waiting_jobs(store, settings) == 1  # only the older one has waited a full period
    time.sleep(0.5)
    assert age_waiting_jobs(store, settings) == 1  # now the younger one
    # kombu pops from the right: the consumption order is the list reversed.
    next_first = [json.loads(m)["headers"]["id"] for m in reversed(store.redis.lrange("cpu.normal", 0, -1))]
    assert next_first == [older.id, younger.id]


def test_aging_never_moves_a_job_into_a_paused_queue(store, clip):
    from renderfarm.worker.beat import age_waiting_jobs

    store.set_paused("cpu.normal", True)
    job = submit(store, "probe", clip, priority=Priority.low)
    time.sleep(1.1)
    assert age_waiting_jobs(store, Settings(aging_seconds=1)) == 0
    assert store.get(job.id).queue == "cpu.low" and store.redis.llen("cpu.low") == 1
    assert store.redis.llen("cpu.normal") == 0
