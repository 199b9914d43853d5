"""The API's farm-wide series the alerts read, against real Redis and a real worker:
orphan recoveries counted when beat requeues a killed worker's job, the dead-letter
size, beat's heartbeat, and webhook deliveries by result."""

from __future__ import annotations

import signal

import pytest
from renderfarm.core.jobs import JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.metrics_store import record_webhook
from renderfarm.core.queues import Priority
from renderfarm.core.redis_conn import redis_client as make_redis
from renderfarm.core.settings import Settings
from renderfarm.core.store import BEAT_HEARTBEAT, DEADLETTER, JobStore
from renderfarm.core.submit import job_message, new_job
from renderfarm.worker.beat import recover_orphans
from tests.support.media import make_clip
from tests.support.monitoring import api_samples
from tests.support.procs import start_worker, wait_for


@pytest.fixture
def store(rf_settings_env):
    settings = Settings()
    return JobStore(make_redis(settings, socket_timeout_s=5), retention_seconds=settings.retention_seconds)


_samples = api_samples


def test_farm_series_follow_redis(store, rf_settings_env, data_dir):
    before = _samples(store)
    assert before[("renderfarm_orphan_recoveries_total", ())] == 0
    assert before[("renderfarm_beat_up", ())] == 0
    assert before[("renderfarm_dead_letter_size", ())] == 0
    assert before[("renderfarm_webhook_deliveries_total", (("result", "retry"),))] == 0

    store.redis.set(BEAT_HEARTBEAT, "1", ex=30)
    store.redis.zadd(DEADLETTER, {"job-a": 1.0, "job-b": 2.0})
    record_webhook(store.redis, "retry")
    record_webhook(store.redis, "retry")
    after = _samples(store)
    assert after[("renderfarm_beat_up", ())] == 1
    assert after[("renderfarm_dead_letter_size", ())] == 2
    assert after[("renderfarm_webhook_deliveries_total", (("result", "retry"),))] == 2
    assert after[("renderfarm_webhook_deliveries_total", (("result", "delivered"),))] == 0


def test_orphan_recovery_is_counted(store, rf_settings_env, data_dir):
    clip = make_clip(data_dir / "inputs" / "long.mp4", duration=30, width=640, height=360)
    env = dict(rf_settings_env, RF_ORPHAN_AFTER_S="1")
    doomed = start_worker(env, concurrency=1)
    try:
        kind = get_kind("transcode")
        params = kind.params_model.model_validate({"renditions": [{"height": 144, "preset": "ultrafast"}]})
        job = new_job(kind, input=clip.as_uri(), params=params.model_dump(mode="json"), priority=Priority.normal)
        store.submit(job, job_message(kind, job))
        wait_for(lambda: store.get(job.id).status == JobStatus.running, 60, what="job to start")
    finally:
        doomed.stop(signal.SIGKILL, 5)  # no chance to hand the job back
    wait_for(lambda: recover_orphans(store, Settings(orphan_after_s=1)) == [job.id], 20, interval=0.5,
             what="orphan recovery")
    samples = _samples(store)
    assert samples[("renderfarm_orphan_recoveries_total", ())] == 1
    # The requeue is a retry, counted with its cause.
    assert samples[("renderfarm_job_retries_total", (("error_type", "worker_lost"), ("kind", "transcode"),
                                                     ("pool", "cpu")))] == 1
