"""The REST API against a real redis-server (no worker: jobs stay queued)."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from renderfarm.api.app import create_app
from renderfarm.core.apikeys import create_api_key
from renderfarm.core.kinds import KINDS
from renderfarm.core.settings import Settings
from renderfarm.core.store import DEADLETTER
from tests.support.media import make_clip
from tests.support.procs import free_port

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def settings(redis_server, redis_client, data_dir):
    return Settings(redis_url=redis_server.url, data_dir=data_dir, api_keys=[KEY],
                    allowed_input_roots=[data_dir / "inputs"])


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def clip(data_dir):
    return make_clip(data_dir / "inputs" / "clip.mp4", duration=1)


def submit(client, clip, headers=None, **extra):
    body = {"kind": "transcode", "input": clip.as_uri(), "params": {"renditions": [{"height": 120}]}} | extra
    return client.post("/v1/jobs", json=body, headers=AUTH | (headers or {}))


def test_submit_returns_202_and_enqueues_one_message(client, clip, redis_client):
    response = submit(client, clip, priority="high")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "queued" and job["queue"] == "cpu.high" and job["kind"] == "transcode"
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert redis_client.llen("cpu.high") == 1
    message = json.loads(redis_client.lindex("cpu.high", 0))
    assert message["headers"]["id"] == job["id"] and message["headers"]["task"] == "renderfarm.kind.transcode"
    assert message["content-type"] == "application/json"  # never pickle
    fetched = client.get(f"/v1/jobs/{job['id']}", headers=AUTH).json()
    assert fetched["id"] == job["id"] and fetched["params"]["renditions"][0]["name"] == "120p"


def test_missing_or_wrong_key_is_401(client, clip, redis_client):
    assert client.get("/v1/jobs").status_code == 401
    response = client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    assert client.post("/v1/jobs", json={"kind": "probe", "input": clip.as_uri()}).status_code == 401
    assert redis_client.llen("cpu.normal") == 0


def test_health_and_metrics_need_no_key(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert "renderfarm_queue_depth" in client.get("/metrics").text


def test_keys_created_in_redis_are_stored_hashed(client, redis_client):
    key = create_api_key(redis_client, tenant="media-team")
    assert key not in json.dumps(redis_client.hgetall("rf:apikeys"))
    assert client.get("/v1/jobs", headers={"X-API-Key": key}).status_code == 200


def test_invalid_params_are_422_with_field_errors(client, clip, redis_client):
    response = client.post("/v1/jobs", headers=AUTH, json={
        "kind": "transcode", "input": clip.as_uri(), "params": {"renditions": [{"height": 99999}]}})
    assert response.status_code == 422
    fields = [e["field"] for e in response.json()["error"]["details"]]
    assert any("renditions.0.height" in f for f in fields), fields
    assert redis_client.dbsize() == 0  # nothing half-written


def test_unknown_kind_is_422_listing_the_kinds(client, clip, redis_client):
    response = client.post("/v1/jobs", headers=AUTH, json={"kind": "render3d", "input": clip.as_uri()})
    assert response.status_code == 422
    detail = response.json()["error"]["details"][0]
    assert {"probe", "transcode", "thumbnail", "extract_audio", "transcribe", "vision"} <= set(detail["allowed"])
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize("uri", ["file:///etc/passwd", "file:///{inputs}/../../secret.mp4", "ftp://example.com/x.mp4",
                                 "http://127.0.0.1/x.mp4", "http://169.254.169.254/latest/meta-data"])
def test_input_outside_allowed_roots_is_422_and_nothing_enqueued(client, redis_client, data_dir, uri):
    uri = uri.replace("{inputs}", str(data_dir / "inputs").lstrip("/"))
    response = client.post("/v1/jobs", headers=AUTH, json={"kind": "probe", "input": uri})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert redis_client.dbsize() == 0


def test_symlink_escape_is_refused(client, redis_client, data_dir, tmp_path):
    outside = make_clip(tmp_path / "outside.mp4", duration=1)
    link = data_dir / "inputs" / "link.mp4"
    link.symlink_to(outside)
    response = client.post("/v1/jobs", headers=AUTH, json={"kind": "probe", "input": link.as_uri()})
    assert response.status_code == 422


def test_idempotency_key_same_body_same_job_different_body_409(client, clip, redis_client):
    first = submit(client, clip, headers={"Idempotency-Key": "abc"})
    again = submit(client, clip, headers={"Idempotency-Key": "abc"})
    assert first.status_code == 202 and again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert redis_client.llen("cpu.normal") == 1
    conflict = submit(client, clip, priority="low", headers={"Idempotency-Key": "abc"})
    assert conflict.status_code == 409
    assert conflict.json()["error"]["details"]["job_id"] == first.json()["id"]
    assert redis_client.llen("cpu.low") == 0


def test_cancel_queued_job_removes_its_message(client, clip, redis_client):
    job = submit(client, clip).json()
    assert redis_client.llen("cpu.normal") == 1
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH)
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    assert redis_client.llen("cpu.normal") == 0
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH)
    assert again.status_code == 409


def test_retry_requeues_a_cancelled_job(client, clip, redis_client):
    job = submit(client, clip).json()
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=AUTH)
    response = client.post(f"/v1/jobs/{job['id']}/retry", headers=AUTH)
    assert response.status_code == 202 and response.json()["status"] == "queued"
    assert redis_client.llen("cpu.normal") == 1
    assert client.post(f"/v1/jobs/{job['id']}/retry", headers=AUTH).status_code == 409  # queued: not retryable


def test_unknown_job_is_404(client):
    response = client.get("/v1/jobs/nope", headers=AUTH)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_list_with_filters_and_cursor_pagination(client, clip):
    ids = [submit(client, clip).json()["id"] for _ in range(7)]
    probe_id = client.post("/v1/jobs", headers=AUTH, json={"kind": "probe", "input": clip.as_uri()}).json()["id"]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=AUTH)
    seen, cursor = [], None
    while True:
        params = {"kind": "transcode", "limit": 3} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params, headers=AUTH).json()
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))  # newest first, each once, across pages
    queued = client.get("/v1/jobs", params={"status": "queued"}, headers=AUTH).json()["jobs"]
    assert {j["id"] for j in queued} == set(ids[1:]) | {probe_id}
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}, headers=AUTH).json()["jobs"]
    assert [j["id"] for j in cancelled] == [ids[0]]
    assert client.get("/v1/jobs", params={"cursor": "!!"}, headers=AUTH).status_code == 400
    assert client.get("/v1/jobs", params={"kind": "nope"}, headers=AUTH).status_code == 422


def test_queues_pause_resume_and_depth(client, clip, redis_client):
    for _ in range(3):
        submit(client, clip, priority="low")
    redis_client.lpush("cpu.low\x06\x163", "{}")  # a kombu priority sub-list counts too
    queues = {q["name"]: q for q in client.get("/v1/queues", headers=AUTH).json()}
    assert queues["cpu.low"]["depth"] == 4 and queues["cpu.low"]["paused"] is False
    assert queues["cpu.low"]["oldest_age_s"] is not None
    assert client.post("/v1/queues/cpu.low/pause", headers=AUTH).json()["paused"] is True
    assert redis_client.sismember("rf:paused", "cpu.low")
    assert client.post("/v1/queues/cpu.low/resume", headers=AUTH).json()["paused"] is False
    assert client.post("/v1/queues/cpu.nope/pause", headers=AUTH).status_code == 404


def test_stats_and_kinds(client, clip):
    submit(client, clip)
    stats = client.get("/v1/stats", headers=AUTH).json()
    assert stats["jobs_by_status"]["queued"] == 1 and stats["jobs_by_kind"]["transcode"] == 1
    kinds = {k["name"]: k for k in client.get("/v1/kinds", headers=AUTH).json()}
    assert kinds["transcribe"]["pool"] == "gpu-transcribe"
    assert "renditions" in kinds["transcode"]["params_schema"]["properties"]
    schema = client.get("/openapi.json").json()
    assert "SubmitTranscodeJob" in schema["components"]["schemas"]


def test_redis_down_is_503_within_one_second(data_dir, clip):
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", data_dir=data_dir, api_keys=[KEY])
    with TestClient(create_app(settings)) as down:
        started = time.monotonic()
        response = down.post("/v1/jobs", headers=AUTH, json={"kind": "probe", "input": clip.as_uri()})
        elapsed = time.monotonic() - started
        assert response.status_code == 503 and response.json()["error"]["code"] == "unavailable"
        assert elapsed < 1.0
        assert down.get("/readyz").status_code == 503
        started = time.monotonic()
        assert down.get("/v1/jobs/some-id", headers=AUTH).status_code == 503
        assert time.monotonic() - started < 1.0
        assert down.get("/healthz").status_code == 200


def test_dead_letter_list_starts_empty(client, redis_client):
    assert redis_client.zcard(DEADLETTER) == 0


def test_listing_by_an_unknown_kind_is_422_naming_the_kinds(client):
    response = client.get("/v1/jobs", params={"kind": "nope"}, headers=AUTH)
    assert response.status_code == 422
    [detail] = response.json()["error"]["details"]
    assert detail["field"] == "query.kind"
    assert set(detail["allowed"]) == set(KINDS)
