"""Exactly once under the faults that scaling causes, through real processes: a
redis-server, Celery workers with prefork pools, the beat maintenance loop and ffmpeg.

Each test names the fault it injects and the outcome that must hold: a job runs
once per attempt, a stale run never writes, and every lost run ends its job in
bounded time (retried within its budget, or failed with an error type)."""

from __future__ import annotations

import json
import signal
import time

import psutil
import pytest

from renderfarm.core.jobs import JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.messages import celery_message
from renderfarm.core.redis_conn import redis_client as make_redis
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobStore, events_channel, inflight_key
from renderfarm.core.submit import job_message
from tests.support.jobs import (
    TERMINAL,
    ffmpeg_processes,
    pool_child_running_ffmpeg,
    signal_process,
    start_beat,
    submit,
    wait_status,
)
from tests.support.media import ffprobe, make_clip
from tests.support.procs import ServiceProcess, start_worker, wait_for

SLOW = {"renditions": [{"height": 360, "preset": "medium"}]}


@pytest.fixture
def store(rf_settings_env):
    settings = Settings()
    return JobStore(make_redis(settings, socket_timeout_s=5), retention_seconds=settings.retention_seconds)


@pytest.fixture
def procs():
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop(signal.SIGKILL, 5)


@pytest.fixture
def long_clip(data_dir):
    # Several seconds of x264 "medium" work even on a fast machine.
    return make_clip(data_dir / "inputs" / "long.mp4", duration=40, width=640, height=360)


@pytest.fixture
def short_clip(data_dir):
    return make_clip(data_dir / "inputs" / "short.mp4", duration=2)


def _running_with_progress(store, job_id):
    job = store.get(job_id)
    return job.status == JobStatus.running and job.progress > 0 and job


# --- lead 1: attempt fencing --------------------------------------------------------------


def test_a_duplicate_delivery_in_the_same_pod_never_runs_a_live_job_twice(store, rf_settings_env, procs, long_clip):
    """A redelivered message reaches another process of the pod that runs the job (the
    CPU pool runs several per pod): it must not take over while the run's lease lives."""
    worker = start_worker(rf_settings_env, concurrency=2)
    procs.append(worker)
    job = submit(store, "transcode", long_clip, SLOW)
    wait_for(lambda: _running_with_progress(store, job.id), 60, what="transcode to make progress")
    store.redis.lpush(job.queue, job_message(get_kind("transcode"), job))  # what a redelivery puts back
    most_ffmpeg = 0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and store.get(job.id).status not in TERMINAL:
        most_ffmpeg = max(most_ffmpeg, len(ffmpeg_processes(worker)))
        time.sleep(0.1)
    final = store.get(job.id)
    assert final.status == JobStatus.succeeded, final.error
    assert final.attempts == 1 and most_ffmpeg == 1


def test_a_stale_run_never_finishes_or_cleans_up_the_attempt_that_replaced_it(store, rf_settings_env, procs,
                                                                              long_clip, data_dir):
    """A pool process stalls (SIGSTOP) long enough for its lease to lapse; the job moves
    to another pod and succeeds there. When the stalled run wakes up it must write
    nothing: not the status, not the in-flight entry, not the outputs."""
    env = dict(rf_settings_env, RF_ORPHAN_AFTER_S="3")
    stalled = start_worker(env, concurrency=1)
    procs.append(stalled)
    procs.append(start_beat(env))
    job = submit(store, "transcode", long_clip, SLOW)
    wait_for(lambda: _running_with_progress(store, job.id), 60, what="transcode to make progress")
    child = wait_for(lambda: pool_child_running_ffmpeg(stalled), 10, what="the pool process running ffmpeg")
    first_worker = store.get(job.id).worker
    child.send_signal(signal.SIGSTOP)
    try:
        rescuer = start_worker(env, concurrency=1)
        procs.append(rescuer)
        done = wait_status(store, job.id, TERMINAL, timeout=240)
    finally:
        signal_process(child, signal.SIGCONT)
    assert done.status == JobStatus.succeeded, done.error
    assert done.attempts == 2 and done.worker != first_worker
    output = data_dir / "outputs" / job.id / "360p.mp4"
    inode = output.stat().st_ino
    # Let the stale run wake up, notice, and stop.
    wait_for(lambda: not ffmpeg_processes(stalled), 60, what="the stale run's ffmpeg to stop")
    time.sleep(3)
    after = store.get(job.id)
    assert after.status == JobStatus.succeeded and after.worker == done.worker and after.attempts == 2
    assert after.result == done.result and after.finished_at == done.finished_at
    assert output.stat().st_ino == inode and ffprobe(output)["format"]["duration"]
    assert not store.redis.hgetall(inflight_key(job.queue))


# --- lead 2: a lease per running job, renewed through warm shutdown -------------------------


def test_warm_shutdown_keeps_the_lease_so_a_long_job_is_not_run_twice(store, rf_settings_env, procs, long_clip):
    """SIGTERM (scale-in) lets the running job finish; while it does, beat must not see it
    as orphaned and hand it to another pod."""
    env = dict(rf_settings_env, RF_ORPHAN_AFTER_S="2")
    leaving = start_worker(env, concurrency=1)
    procs.append(leaving)
    procs.append(start_beat(env))
    job = submit(store, "transcode", long_clip, SLOW)
    wait_for(lambda: _running_with_progress(store, job.id), 60, what="transcode to make progress")
    owner = store.get(job.id).worker
    procs.append(start_worker(env, concurrency=1))  # an idle pod that could take the job
    leaving.proc.send_signal(signal.SIGTERM)  # the main process only, as the kubelet does
    leaving.proc.wait(timeout=240)
    final = wait_status(store, job.id, TERMINAL, timeout=60)
    assert final.status == JobStatus.succeeded and final.attempts == 1 and final.worker == owner


def test_a_restarted_worker_with_the_same_name_gets_its_lost_job_back(store, rf_settings_env, procs, long_clip):
    """A container restart keeps the worker's name; the job it lost must not wait for the
    broker's visibility timeout because that name heart-beats again."""
    env = dict(rf_settings_env, RF_ORPHAN_AFTER_S="2")
    procs.append(start_beat(env))
    worker = start_worker(env, concurrency=1, name="cpu@restarting-pod")
    procs.append(worker)
    job = submit(store, "transcode", long_clip, {"renditions": [{"height": 144, "preset": "ultrafast"}]})
    wait_for(lambda: store.get(job.id).status == JobStatus.running, 60, what="job to start")
    worker.kill()
    procs.append(start_worker(env, concurrency=1, name="cpu@restarting-pod"))
    final = wait_status(store, job.id, TERMINAL, timeout=120)
    assert final.status == JobStatus.succeeded and final.attempts == 2


# --- lead 3: every path that ends a run ends the job --------------------------------------


def test_a_pool_process_killed_mid_job_retries_then_fails_with_worker_lost(store, rf_settings_env, procs, long_clip):
    """What the OOM killer does: SIGKILL the pool process running the job, every attempt,
    with a second pod idle. The job is retried within its budget and then fails with
    error type ``worker_lost``; it never stays ``running`` and never runs past its budget."""
    first = start_worker(rf_settings_env, concurrency=1)
    second = start_worker(rf_settings_env, concurrency=1)
    procs.extend([first, second])
    job = submit(store, "transcode", long_clip, SLOW)
    budget = 1 + get_kind("transcode").retry.max_retries
    kills = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and kills <= budget + 1:
        if store.get(job.id).status in TERMINAL:
            break
        child = pool_child_running_ffmpeg(first) or pool_child_running_ffmpeg(second)
        if child is not None and signal_process(child):
            kills += 1
            wait_for(lambda: not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE, 10,
                     what="the killed process to go")
        time.sleep(0.1)
    final = wait_status(store, job.id, TERMINAL, timeout=30)
    assert final.status == JobStatus.failed and final.error.type == "worker_lost", final
    assert kills == budget and final.attempts == budget


def test_a_hard_time_limit_is_recorded_as_timeout_and_retried(store, rf_settings_env, procs, long_clip):
    """Celery kills a run that outlives its hard limit (here: a hung pool process that
    cannot even take the soft limit's signal). The job gets error type ``timeout``
    and another attempt; it must not stay ``running``."""
    worker = start_worker(rf_settings_env, concurrency=1)
    procs.append(worker)
    kind = get_kind("transcode")
    # This delivery has a 2 s soft and 4 s hard limit; the retry's message carries the kind's own.
    job = submit(store, "transcode", long_clip, {"renditions": [{"height": 144, "preset": "ultrafast"}]},
                 message_for=lambda j: celery_message(task_name=kind.task_name, task_id=j.id, queue=j.queue,
                                                      args=[j.id], soft_time_limit_s=2, time_limit_s=4,
                                                      enqueued_at=time.time()))
    wait_for(lambda: store.get(job.id).status == JobStatus.running, 30, interval=0.01, what="job to start")
    (pool_process,) = psutil.Process(worker.proc.pid).children()
    pool_process.send_signal(signal.SIGSTOP)  # hung: the soft limit's SIGUSR1 stays pending
    seen_timeout = wait_for(lambda: (j := store.get(job.id)).error is not None and j.error.type == "timeout" and j,
                            60, what="the hard limit to be recorded")
    assert seen_timeout.error.retryable
    final = wait_status(store, job.id, TERMINAL, timeout=120)
    assert final.status == JobStatus.succeeded and final.attempts == 2


# --- lead 4 and 5: one atomic call per status change ----------------------------------------


def test_a_retry_is_scheduled_in_one_call_that_also_publishes(store, rf_settings_env, short_clip):
    message = job_message(get_kind("probe"), submit(store, "probe", short_clip))
    for warm_up in (True, False):  # the warm-up loads the script into Redis (SCRIPT LOAD after NOSCRIPT)
        job = submit(store, "probe", short_clip)
        claim = store.claim(job.id, "cpu@test", max_attempts=4, lease_s=30)
        if warm_up:
            store.schedule_retry(job.id, claim.token, message, 5.0, {})
    pubsub = store.redis.pubsub()
    pubsub.subscribe(events_channel(job.id))
    pubsub.get_message(timeout=1)
    monitor_client = make_redis(Settings(), socket_timeout_s=5)
    with monitor_client.monitor() as monitor:
        store.redis.ping()  # marks the start
        updated = store.schedule_retry(job.id, claim.token, job_message(get_kind("probe"), job), 5.0,
                                       {"stage": "retrying", "message": "retry 1"})
        store.redis.echo("end")
        commands = []
        for entry in monitor.listen():
            if entry["command"].startswith("ECHO"):
                break
            if entry.get("client_type") != "lua":  # commands a script runs are part of its one call
                commands.append(entry["command"])
    writes = [c for c in commands if not c.startswith(("PING", "HELLO", "CLIENT"))]
    assert len(writes) == 1 and writes[0].startswith("EVALSHA"), writes
    assert updated.status == JobStatus.retrying and updated.stage == "retrying"
    assert store.redis.zscore("rf:delayed", job.id) is not None
    event = pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert event and json.loads(event["data"])["status"] == "retrying"


def test_a_status_change_returns_the_new_record_and_publishes_its_event(store, rf_settings_env, short_clip):
    job = submit(store, "probe", short_clip)
    pubsub = store.redis.pubsub()
    pubsub.subscribe(events_channel(job.id))
    pubsub.get_message(timeout=1)
    cancelled = store.transition(job.id, JobStatus.cancelled, fields={"stage": "cancelled"})
    assert cancelled.status == JobStatus.cancelled and cancelled.stage == "cancelled"
    event = pubsub.get_message(ignore_subscribe_messages=True, timeout=2)
    assert event and json.loads(event["data"])["status"] == "cancelled"
    assert store.redis.llen(job.queue) == 0  # its waiting message left the queue in the same call


# --- lead 7: cancel, quick retry, budget ------------------------------------------------------


def test_cancel_then_quick_retry_stops_the_old_run_and_keeps_the_new_outputs(store, rf_settings_env, procs,
                                                                            long_clip, data_dir):
    worker = start_worker(rf_settings_env, concurrency=2)
    procs.append(worker)
    job = submit(store, "transcode", long_clip, SLOW)
    wait_for(lambda: _running_with_progress(store, job.id), 60, what="transcode to make progress")
    old_ffmpeg = ffmpeg_processes(worker)
    assert len(old_ffmpeg) == 1
    store.transition(job.id, JobStatus.cancelled)  # POST .../cancel
    store.transition(job.id, JobStatus.queued, fields={"stage": "", "message": "retried by request"},  # POST .../retry
                     requeue_message=job_message(get_kind("transcode"), job), requeue_queue=job.queue)
    wait_for(lambda: not old_ffmpeg[0].is_running() or old_ffmpeg[0].status() == psutil.STATUS_ZOMBIE, 5,
             what="the old attempt's ffmpeg to stop")
    final = wait_status(store, job.id, TERMINAL, timeout=240)
    assert final.status == JobStatus.succeeded, final.error
    output = data_dir / "outputs" / job.id / "360p.mp4"
    time.sleep(2)  # the old run, if it went on, would now delete or replace this
    assert output.exists() and float(ffprobe(output)["format"]["duration"]) > 30
    assert store.get(job.id).status == JobStatus.succeeded


def test_a_manual_retry_resets_the_retry_budget(store, rf_settings_env, procs, data_dir):
    import http.server
    import threading

    class AlwaysBusy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AlwaysBusy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = dict(rf_settings_env, RF_ALLOW_PRIVATE_FETCH="true")
        procs.append(start_worker(env, concurrency=1))
        job = submit(store, "probe", f"http://127.0.0.1:{server.server_address[1]}/clip.mp4")
        budget = 1 + get_kind("probe").retry.max_retries
        first = wait_status(store, job.id, TERMINAL, timeout=120)
        assert first.status == JobStatus.failed and first.attempts == budget
        store.transition(job.id, JobStatus.queued, fields={"error": None, "stage": "", "message": "retried by request"},
                         requeue_message=job_message(get_kind("probe"), first), requeue_queue=first.queue)
        second = wait_status(store, job.id, TERMINAL, timeout=120)
        assert second.status == JobStatus.failed and second.attempts == 2 * budget
    finally:
        server.shutdown()


# --- lead 8: orphan requeues are events -------------------------------------------------------


def test_an_orphan_requeue_publishes_an_event(store, rf_settings_env, procs, long_clip):
    from renderfarm.worker.beat import recover_orphans

    env = dict(rf_settings_env, RF_ORPHAN_AFTER_S="1")
    doomed = start_worker(env, concurrency=1)
    procs.append(doomed)
    job = submit(store, "transcode", long_clip, {"renditions": [{"height": 144, "preset": "ultrafast"}]})
    wait_for(lambda: store.get(job.id).status == JobStatus.running, 60, what="job to start")
    pubsub = store.redis.pubsub()
    pubsub.subscribe(events_channel(job.id))
    pubsub.get_message(timeout=1)
    doomed.kill()
    wait_for(lambda: recover_orphans(store, Settings(orphan_after_s=1)) == [job.id], 20, interval=0.5,
             what="orphan recovery")
    statuses = []
    while (message := pubsub.get_message(ignore_subscribe_messages=True, timeout=1)) is not None:
        statuses.append(json.loads(message["data"])["status"])
    assert "retrying" in statuses


# --- a Redis restart at the wrong moment -----------------------------------------------------


def test_a_delivery_its_consumer_could_not_put_back_is_requeued(store, rf_settings_env, procs, short_clip):
    """A pool process dies while Redis restarts: Celery cannot put the message back, and
    kombu keeps it as delivered (its unacked hash) until the visibility timeout, hours
    away. The job, still queued, must run anyway."""
    import uuid

    env = dict(rf_settings_env, RF_ORPHAN_AFTER_S="2")
    job = submit(store, "probe", short_clip)
    raw = store.redis.rpop(job.queue)  # what the consumer took ...
    message = json.loads(raw)
    tag = str(uuid.uuid4())
    store.redis.hset("unacked", tag, json.dumps([message, job.queue, job.queue]))  # ... as kombu records it
    store.redis.zadd("unacked_index", {tag: time.time() - 60})  # delivered a minute ago, never claimed
    procs.append(start_worker(env, concurrency=1))
    procs.append(start_beat(env))
    final = wait_status(store, job.id, TERMINAL, timeout=90)
    assert final.status == JobStatus.succeeded and final.attempts == 1
