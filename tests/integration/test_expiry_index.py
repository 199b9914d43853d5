"""The expiry pass is bounded per tick: it reads only due entries of the expiry index,
at most N of them, and a backlog drains over the following ticks (real redis-server)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from renderfarm.core.jobs import JobError, JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.queues import Priority
from renderfarm.core.store import DEADLETTER, EXPIRES, INDEX_ALL, JobStore, tenant_index
from renderfarm.core.submit import job_message, new_job

RETENTION_S = 1


@pytest.fixture
def store(redis_client):
    return JobStore(redis_client, retention_seconds=RETENTION_S)


def _finished(store: JobStore, count: int, status: JobStatus) -> list[str]:
    kind = get_kind("probe")
    ids = []
    for _ in range(count):
        job = new_job(kind, input="file:///data/in.mp4", params={}, priority=Priority.normal, tenant="t1")
        store.submit(job, job_message(kind, job))
        store.transition(job.id, JobStatus.running, fields={"worker": "w"})
        store.transition(job.id, status, dead_letter=status == JobStatus.failed,
                         fields={"finished_at": datetime.now(timezone.utc),
                                 "error": JobError(type="internal", message="x") if status == JobStatus.failed else None})
        ids.append(job.id)
    return ids


def _commands(client, name: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{name}", {}).get("calls", 0))


def test_a_pass_touches_at_most_n_due_jobs_and_the_backlog_drains_over_ticks(store, redis_client):
    done = _finished(store, 18, JobStatus.succeeded) + _finished(store, 7, JobStatus.failed)
    # Many jobs that are not due: a pass must not look at them.
    kind = get_kind("probe")
    for _ in range(300):
        job = new_job(kind, input="file:///data/in.mp4", params={}, priority=Priority.low, tenant="t1")
        store.submit(job, job_message(kind, job))
    assert redis_client.zcard(DEADLETTER) == 7
    time.sleep(RETENTION_S + 0.5)
    assert not any(redis_client.exists(f"rf:job:{job_id}") for job_id in done)  # Redis expired the records
    assert store.expiry_backlog() == 25

    backlog = []
    for _ in range(3):
        redis_client.config_resetstat()
        handled, removed = store.expire_due(limit=10)
        assert handled <= 10
        # Six index entries per job (all, status, kind, tenant x3), two review entries (farm
        # and tenant) per failed one, and one removal of forgotten expiry entries.
        assert _commands(redis_client, "zrem") <= 8 * 10 + 1 and _commands(redis_client, "pttl") <= 10
        assert _commands(redis_client, "zrange") + _commands(redis_client, "lrange") == 0  # never a scan
        backlog.append(store.expiry_backlog())
    assert backlog == [15, 5, 0]
    assert store.expire_due(limit=10) == (0, 0)
    assert redis_client.zcard(INDEX_ALL) == 300 and redis_client.zcard(tenant_index("t1")) == 300
    assert redis_client.zcard("rf:jobs:status:succeeded") == 0 and redis_client.zcard("rf:jobs:status:failed") == 0
    assert redis_client.zcard(DEADLETTER) == 0 and redis_client.zcard(EXPIRES) == 0
    assert len(store.list(tenant="t1", limit=500).jobs) == 300


def test_a_retried_job_leaves_the_expiry_index_and_a_live_record_is_not_cleaned(store, redis_client):
    [job_id] = _finished(store, 1, JobStatus.failed)
    assert redis_client.zcard(EXPIRES) == 1
    store.transition(job_id, JobStatus.queued, requeue_message=job_message(get_kind("probe"), store.get(job_id)))
    assert redis_client.zcard(EXPIRES) == 0 and redis_client.ttl(f"rf:job:{job_id}") == -1
    [kept] = _finished(store, 1, JobStatus.succeeded)
    # Due by the caller's clock, but Redis still holds the record: looked at again later, nothing removed.
    assert store.expire_due(limit=10, now=time.time() + RETENTION_S + 5) == (1, 0)
    assert redis_client.zscore(INDEX_ALL, kept) is not None and redis_client.zcard(EXPIRES) == 1


def test_the_lost_message_check_reads_only_counters_until_a_message_is_missing(store, redis_client):
    from renderfarm.worker.beat import requeue_lost_messages

    kind = get_kind("probe")
    jobs = []
    for _ in range(50):
        job = new_job(kind, input="file:///data/in.mp4", params={}, priority=Priority.normal, tenant="t1")
        store.submit(job, job_message(kind, job))
        jobs.append(job)
    redis_client.config_resetstat()
    assert requeue_lost_messages(store, set(), delivery_grace_s=30, full=False) == ([], set())
    assert _commands(redis_client, "lrange") + _commands(redis_client, "zrange") == 0  # counters only
    lost = redis_client.rpop("cpu.normal")  # a message gone with nothing to show for it
    lost_id = json.loads(lost)["headers"]["id"]
    requeued, suspects = requeue_lost_messages(store, set(), delivery_grace_s=30, full=False)
    assert requeued == [] and suspects == {lost_id}  # found on the first look, requeued on the second
    requeued, suspects = requeue_lost_messages(store, suspects, delivery_grace_s=30, full=False)
    assert requeued == [lost_id] and suspects == set()
    assert redis_client.lindex("cpu.normal", 0) == lost  # the same bytes, rebuilt from the job's stamp


def test_a_job_stored_with_a_message_copy_before_stamps_can_still_be_cancelled_and_recovered(store, redis_client):
    """Records written by the previous release hold ``queue_message`` and no stamp."""
    kind = get_kind("probe")
    old = []
    for _ in range(2):
        job = new_job(kind, input="file:///data/in.mp4", params={}, priority=Priority.normal)
        message = job_message(kind, job)
        store.submit(job, message)
        redis_client.hdel(f"rf:job:{job.id}", "message_queue", "message_at")
        redis_client.hset(f"rf:job:{job.id}", "queue_message", message)
        old.append((job, message))
    (cancelled, _), (lost, lost_message) = old
    store.transition(cancelled.id, JobStatus.cancelled)
    assert redis_client.lrange("cpu.normal", 0, -1) == [lost_message]  # the cancelled one's message is gone
    redis_client.delete("cpu.normal")
    assert store.requeue_lost_message(lost.id)
    assert redis_client.lrange("cpu.normal", 0, -1) == [lost_message]
