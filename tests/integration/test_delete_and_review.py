"""DELETE /v1/jobs/{id} and manual review (/v1/review) against a real redis-server and
real worker processes running real ffmpeg."""

from __future__ import annotations

import signal
import threading
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from fastapi.testclient import TestClient

from renderfarm.api.app import create_app
from renderfarm.core.apikeys import Scope, create_api_key
from renderfarm.core.jobs import JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.queues import Priority
from renderfarm.core.settings import Settings
from renderfarm.core.messages import message_task_id
from renderfarm.core.store import DEADLETTER, LEGACY_DEADLETTER, JobStore, job_key, status_index, tenant_review_index
from renderfarm.core.submit import job_message, new_job
from tests.support.jobs import TERMINAL, wait_status
from tests.support.media import make_clip
from tests.support.procs import ServiceProcess, start_api, start_worker, wait_for


@pytest.fixture
def settings(rf_settings_env):
    return Settings()


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def store(client) -> JobStore:
    return client.app.state.store


@pytest.fixture
def keys(redis_client):
    """A tenant's key, another tenant's key, and an admin key."""
    return {
        "a": {"X-API-Key": create_api_key(redis_client, tenant="team-a")},
        "b": {"X-API-Key": create_api_key(redis_client, tenant="team-b")},
        "admin": {"X-API-Key": create_api_key(redis_client, tenant="ops", scopes={Scope.jobs, Scope.admin})},
    }


@pytest.fixture
def workers():
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop(signal.SIGKILL, 5)


@pytest.fixture
def clip(data_dir):
    return make_clip(data_dir / "inputs" / "clip.mp4", duration=1)


def post_job(client, headers, body, idempotency_key=None):
    extra = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    response = client.post("/v1/jobs", json=body, headers=headers | extra)
    assert response.status_code == 202, response.text
    return response.json()


def every_key_naming(store: JobStore, job_id: str) -> list[str]:
    """Every Redis key that holds the job id (as member, field, value or in its name)."""
    found = []
    for key in store.redis.scan_iter("rf:*"):
        kind = store.redis.type(key)
        if job_id in key or (kind == "zset" and store.redis.zscore(key, job_id) is not None) or \
                (kind == "hash" and store.redis.hexists(key, job_id)) or \
                (kind == "string" and job_id in (store.redis.get(key) or "")) or \
                (kind == "list" and job_id in " ".join(store.redis.lrange(key, 0, -1))):
            found.append(key)
    return found


def thumbnail_beyond_end(clip):
    # A 1 s clip has no frame at 50 s: invalid_media, no retry, straight into review.
    return {"kind": "thumbnail", "input": clip.as_uri(), "params": {"times": [50.0]}}


# --- delete --------------------------------------------------------------------------------


def test_delete_removes_record_indexes_outputs_and_the_job_is_404_everywhere(client, store, keys, workers,
                                                                             rf_settings_env, clip, settings):
    workers.append(start_worker(rf_settings_env))
    job = post_job(client, keys["a"], {"kind": "thumbnail", "input": clip.as_uri(), "params": {"count": 2}},
                   idempotency_key="thumbs-1")
    poison = post_job(client, keys["a"], thumbnail_beyond_end(clip))
    done = wait_status(store, job["id"], TERMINAL)
    assert done.status == JobStatus.succeeded, done.error
    assert wait_status(store, poison["id"], TERMINAL).status == JobStatus.failed
    outputs = settings.outputs_dir / job["id"]
    assert len([p for p in outputs.iterdir() if p.is_file()]) == 2
    assert every_key_naming(store, job["id"])  # the record and its indexes, before

    assert client.delete(f"/v1/jobs/{job['id']}", headers=keys["b"]).status_code == 404  # another tenant's
    assert store.get(job["id"]).status == JobStatus.succeeded and outputs.exists()
    response = client.delete(f"/v1/jobs/{job['id']}", headers=keys["a"])
    assert response.status_code == 204, response.text
    assert client.delete(f"/v1/jobs/{poison['id']}", headers=keys["a"]).status_code == 204

    for gone in (job["id"], poison["id"]):
        assert every_key_naming(store, gone) == []  # record, all/status/kind/tenant indexes, review, idempotency
    assert not outputs.exists() and settings.outputs_dir.exists()
    assert store.redis.zcard(DEADLETTER) == 0 and store.redis.zcard(tenant_review_index("team-a")) == 0
    for method, path in (("GET", ""), ("GET", "/events"), ("POST", "/retry"), ("POST", "/cancel"), ("DELETE", "")):
        answer = client.request(method, f"/v1/jobs/{job['id']}{path}", headers=keys["a"])
        assert answer.status_code == 404, (method, path, answer.text)
    listed = client.get("/v1/jobs", headers=keys["a"]).json()["jobs"]
    assert listed == []
    assert client.get("/v1/jobs", params={"status": "succeeded", "kind": "thumbnail"}, headers=keys["a"]).json()["jobs"] == []
    assert client.get("/v1/review", headers=keys["a"]).json()["items"] == []
    # The idempotency key is free again: the same request makes a new job.
    again = post_job(client, keys["a"], {"kind": "thumbnail", "input": clip.as_uri(), "params": {"count": 2}},
                     idempotency_key="thumbs-1")
    assert again["id"] != job["id"]


def test_deleting_a_running_job_is_409_and_a_queued_one_is_cancelled_then_deleted(client, store, keys, workers,
                                                                                   rf_settings_env, data_dir):
    long_clip = make_clip(data_dir / "inputs" / "long.mp4", duration=30, width=640, height=360)
    workers.append(start_worker(rf_settings_env, concurrency=1))
    body = {"kind": "transcode", "input": long_clip.as_uri(), "params": {"renditions": [{"height": 240}]}}
    running = post_job(client, keys["a"], body)
    queued = post_job(client, keys["a"], body | {"priority": "low"})  # waits behind the one running
    wait_for(lambda: store.get(running["id"]).status == JobStatus.running, 60, what="job to start")

    response = client.delete(f"/v1/jobs/{running['id']}", headers=keys["a"])
    assert response.status_code == 409 and "cancel" in response.json()["error"]["message"]
    assert store.get(running["id"]).status == JobStatus.running

    assert client.delete(f"/v1/jobs/{queued['id']}", headers=keys["a"]).status_code == 204
    assert client.get(f"/v1/jobs/{queued['id']}", headers=keys["a"]).status_code == 404
    assert store.redis.llen("cpu.low") == 0  # its message went with the cancel

    assert client.post(f"/v1/jobs/{running['id']}/cancel", headers=keys["a"]).status_code == 202
    assert wait_status(store, running["id"], TERMINAL).status == JobStatus.cancelled
    assert client.delete(f"/v1/jobs/{running['id']}", headers=keys["a"]).status_code == 204
    assert client.get(f"/v1/jobs/{running['id']}", headers=keys["a"]).status_code == 404


def test_a_deleted_job_is_404_on_a_real_api_process_sse_stream(rf_settings_env, store, keys, clip):
    proc, base = start_api(rf_settings_env)
    try:
        job = httpx.post(f"{base}/v1/jobs", headers=keys["a"], json={"kind": "probe", "input": clip.as_uri()}).json()
        assert httpx.delete(f"{base}/v1/jobs/{job['id']}", headers=keys["a"]).status_code == 204  # queued: cancelled first
        with httpx.stream("GET", f"{base}/v1/jobs/{job['id']}/events", headers=keys["a"], timeout=5) as response:
            assert response.status_code == 404
        assert not store.redis.exists(job_key(job["id"]))
    finally:
        proc.stop()


# --- review ----------------------------------------------------------------------------------


def test_review_shows_a_poison_job_requeue_with_corrected_params_succeeds_and_dismiss_keeps_the_record(
        client, store, keys, workers, rf_settings_env, clip):
    workers.append(start_worker(rf_settings_env))
    poison = post_job(client, keys["a"], thumbnail_beyond_end(clip))
    other = post_job(client, keys["a"], thumbnail_beyond_end(clip))
    for job_id in (poison["id"], other["id"]):
        assert wait_status(store, job_id, TERMINAL).status == JobStatus.failed

    page = client.get("/v1/review", params={"kind": "thumbnail", "error_type": "invalid_media"}, headers=keys["a"]).json()
    assert {item["job"]["id"] for item in page["items"]} == {poison["id"], other["id"]}
    assert client.get("/v1/review", headers=keys["b"]).json()["items"] == []  # another tenant sees none
    assert client.get("/v1/review", params={"error_type": "transient"}, headers=keys["a"]).json()["items"] == []
    first = client.get("/v1/review", params={"limit": 1}, headers=keys["a"]).json()
    second = client.get("/v1/review", params={"limit": 1, "cursor": first["next_cursor"]}, headers=keys["a"]).json()
    assert {first["items"][0]["job"]["id"], second["items"][0]["job"]["id"]} == {poison["id"], other["id"]}
    entered = min(datetime.fromisoformat(item["in_review_since"]) for item in page["items"])
    assert len(client.get("/v1/review", params={"since": entered.isoformat()}, headers=keys["a"]).json()["items"]) >= 1
    later = (datetime.now(timezone.utc) + timedelta(seconds=5)).isoformat()
    assert client.get("/v1/review", params={"since": later}, headers=keys["a"]).json()["items"] == []

    bad = client.post(f"/v1/review/{poison['id']}/requeue", json={"params": {"times": "soon"}}, headers=keys["a"])
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"].startswith("params")
    assert client.post(f"/v1/review/{poison['id']}/requeue", json={}, headers=keys["b"]).status_code == 404
    response = client.post(f"/v1/review/{poison['id']}/requeue", json={"params": {"times": [0.5]}, "priority": "high"},
                           headers=keys["a"])
    assert response.status_code == 202, response.text
    requeued = response.json()
    assert requeued["status"] == "queued" and requeued["queue"] == "cpu.high" and requeued["params"]["times"] == [0.5]
    [action] = requeued["review_log"]
    assert action["action"] == "requeue" and action["tenant"] == "team-a" and action["by"]
    assert action["changes"] == {"params": requeued["params"], "priority": "high"}
    final = wait_status(store, poison["id"], TERMINAL)
    assert final.status == JobStatus.succeeded, final.error
    assert final.attempts == 2 and len(final.result.outputs) == 1
    assert client.post(f"/v1/review/{poison['id']}/requeue", headers=keys["a"]).status_code == 409  # not in review now

    dismissed = client.post(f"/v1/review/{other['id']}/dismiss", headers=keys["a"])
    assert dismissed.status_code == 200 and dismissed.json()["review_log"][0]["action"] == "dismiss"
    kept = client.get(f"/v1/jobs/{other['id']}", headers=keys["a"]).json()
    assert kept["status"] == "failed" and kept["error"]["type"] == "invalid_media"
    assert client.get("/v1/review", headers=keys["a"]).json()["items"] == []
    assert store.dead_letter() == [] and client.get("/v1/stats", headers=keys["admin"]).json()["dead_letter"] == 0


def submit_as(store: JobStore, tenant: str, kind: str, uri: str, params: dict | None = None):
    """Straight into the store, past the API's input check (what a worker must still refuse)."""
    job_kind = get_kind(kind)
    job = new_job(job_kind, input=uri, params=job_kind.params_model.model_validate(params or {}).model_dump(mode="json"),
                  priority=Priority.normal, tenant=tenant)
    return store.submit(job, job_message(job_kind, job))[0]


def test_bulk_requeue_by_error_type_picks_exactly_the_matching_jobs(client, store, keys, workers,
                                                                   rf_settings_env, clip, tmp_path):
    outside = tmp_path / "outside.mp4"  # not under any allowed input root: invalid_input
    outside.write_bytes(clip.read_bytes())
    media_a = post_job(client, keys["a"], thumbnail_beyond_end(clip))["id"]
    media_b = post_job(client, keys["b"], thumbnail_beyond_end(clip))["id"]
    input_a1 = submit_as(store, "team-a", "probe", outside.as_uri()).id
    input_a2 = submit_as(store, "team-a", "probe", outside.as_uri()).id
    input_b = submit_as(store, "team-b", "probe", outside.as_uri()).id
    workers.append(start_worker(rf_settings_env))
    errors = {job_id: wait_status(store, job_id, TERMINAL).error.type
              for job_id in (media_a, media_b, input_a1, input_a2, input_b)}
    assert errors == {media_a: "invalid_media", media_b: "invalid_media", input_a1: "invalid_input",
                      input_a2: "invalid_input", input_b: "invalid_input"}
    workers.pop().stop(signal.SIGKILL, 5)  # requeued jobs stay queued: what was picked is what is queued

    denied = client.post("/v1/review:requeue", json={"error_type": "invalid_input", "all_tenants": True}, headers=keys["a"])
    assert denied.status_code == 403
    response = client.post("/v1/review:requeue", json={"error_type": "invalid_input"}, headers=keys["a"])
    assert response.status_code == 200, response.text
    assert sorted(response.json()["requeued"]) == sorted([input_a1, input_a2]) and response.json()["more"] is False
    status = {job_id: store.get(job_id).status for job_id in errors}
    assert status == {media_a: "failed", media_b: "failed", input_a1: "queued", input_a2: "queued", input_b: "failed"}
    assert set(store.dead_letter()) == {media_a, media_b, input_b}
    assert store.redis.llen("cpu.normal") == 2

    # An admin's bulk action across tenants, by kind and error type together.
    response = client.post("/v1/review:requeue", json={"kind": "thumbnail", "error_type": "invalid_media",
                                                       "all_tenants": True}, headers=keys["admin"])
    assert sorted(response.json()["requeued"]) == sorted([media_a, media_b])
    assert store.get(media_b).review_log[0].tenant == "ops" and store.dead_letter() == [input_b]


def test_review_backlog_metric_by_kind_and_error_type(client, store, keys, workers, rf_settings_env, clip, tmp_path):
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(clip.read_bytes())
    ids = [post_job(client, keys["a"], thumbnail_beyond_end(clip))["id"] for _ in range(2)]
    ids.append(submit_as(store, "team-b", "probe", outside.as_uri()).id)
    workers.append(start_worker(rf_settings_env))
    for job_id in ids:
        wait_status(store, job_id, TERMINAL)
    text = client.get("/metrics").text
    assert 'renderfarm_review_backlog{error_type="invalid_media",kind="thumbnail"} 2.0' in text
    assert 'renderfarm_review_backlog{error_type="invalid_input",kind="probe"} 1.0' in text
    assert "renderfarm_dead_letter_size 3.0" in text


def test_an_old_dead_letter_list_is_adopted_into_review(client, store, keys, workers, rf_settings_env, clip):
    workers.append(start_worker(rf_settings_env))
    job = post_job(client, keys["a"], thumbnail_beyond_end(clip))
    assert wait_status(store, job["id"], TERMINAL).status == JobStatus.failed
    # As a farm from before review kept it: a plain list, and nothing in the sets.
    store.redis.delete(DEADLETTER, tenant_review_index("team-a"))
    store.redis.lpush(LEGACY_DEADLETTER, job["id"], "expired-long-ago")
    assert client.get("/v1/review", headers=keys["a"]).json()["items"] == []
    assert store.purge_expired_index_entries() >= 0  # beat's maintenance pass
    assert not store.redis.exists(LEGACY_DEADLETTER)
    [item] = client.get("/v1/review", headers=keys["a"]).json()["items"]
    assert item["job"]["id"] == job["id"] and store.dead_letter() == [job["id"]]


def test_a_webhook_delivery_in_flight_never_brings_a_deleted_job_back(client, store, keys, clip):
    job = post_job(client, keys["a"], {"kind": "probe", "input": clip.as_uri()})
    assert client.delete(f"/v1/jobs/{job['id']}", headers=keys["a"]).status_code == 204
    # What beat's sender writes when it claimed the delivery just before the delete.
    assert store.count_webhook_attempt(job["id"]) == 0
    store.webhook_done(job["id"], "delivered")
    assert not store.redis.exists(job_key(job["id"]))
    assert client.get(f"/v1/jobs/{job['id']}", headers=keys["a"]).status_code == 404


def fail_for_good(store: JobStore, job_id: str, error_type: str = "transient") -> None:
    """A run that claims the job and fails it for good, through the store as a worker's run does."""
    claim = store.claim(job_id, "cpu@test", max_attempts=3, lease_s=30)
    assert claim.outcome == "run"
    store.transition(job_id, JobStatus.failed, token=claim.token, dead_letter=True,
                     fields={"error": {"type": error_type, "message": "upstream down", "retryable": False}})


def test_an_api_killed_in_the_middle_of_a_bulk_requeue_loses_no_review_entry(rf_settings_env, store, keys, clip):
    count = 1000
    ids = [submit_as(store, "team-a", "probe", clip.as_uri()).id for _ in range(count)]
    store.redis.delete("cpu.normal")  # the messages a worker took
    for job_id in ids:
        fail_for_good(store, job_id)
    assert store.redis.zcard(DEADLETTER) == count
    proc, base = start_api(rf_settings_env)
    try:
        def bulk_requeue():
            try:
                httpx.post(f"{base}/v1/review:requeue", headers=keys["a"], json={"error_type": "transient"}, timeout=30)
            except httpx.HTTPError:
                pass  # the API dies under it: that is the point

        request = threading.Thread(target=bulk_requeue, daemon=True)
        request.start()
        wait_for(lambda: store.redis.llen("cpu.normal") > 0, 30, interval=0.001, what="the bulk requeue to start")
        proc.kill()
    finally:
        proc.stop()
    queued = set(store.redis.zrange(status_index(JobStatus.queued), 0, -1))
    in_review = set(store.redis.zrange(DEADLETTER, 0, -1))
    assert queued and in_review, "the kill did not fall in the middle of the bulk action"
    print(f"\nkilled mid-bulk: {len(queued)} requeued, {len(in_review)} still in review")
    assert queued | in_review == set(ids) and not queued & in_review  # each job in exactly one place
    messages = [message_task_id(raw) for raw in store.redis.lrange("cpu.normal", 0, -1)]
    assert sorted(messages) == sorted(queued)  # every requeued job has its message, once
    for job_id in in_review:
        assert store.get(job_id).status == JobStatus.failed
