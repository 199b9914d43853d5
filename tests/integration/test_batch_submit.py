"""Batch submit against a real API process, real redis-server and real Celery workers:
all or none, per-item errors, its own status view, Idempotency-Key and tenancy."""

from __future__ import annotations

import json

import httpx
import pytest
from typer.testing import CliRunner

from renderfarm.cli import app as cli_app
from renderfarm.core.apikeys import Scope, create_api_key
from renderfarm.core.queues import all_queues
from tests.support.media import make_clip
from tests.support.procs import start_api, start_worker, wait_for

OPERATOR_KEY = "operator-key-0123456789"
AUTH = {"Authorization": f"Bearer {OPERATOR_KEY}"}


@pytest.fixture
def api(rf_settings_env):
    proc, base = start_api(dict(rf_settings_env, RF_API_KEYS=OPERATOR_KEY))
    try:
        yield base
    finally:
        proc.stop()


@pytest.fixture
def clip(data_dir):
    return make_clip(data_dir / "inputs" / "clip.mp4", duration=0.5, width=160, height=120, fps=10)


def _queued_messages(redis_client) -> int:
    return sum(redis_client.llen(queue) for queue in all_queues())


def test_a_batch_runs_to_completion_on_real_workers_and_shows_its_status(api, rf_settings_env, redis_client, clip):
    items = [{"kind": "probe", "input": clip.as_uri(), "priority": ("low", "normal", "high")[i % 3]} for i in range(12)]
    response = httpx.post(f"{api}/v1/jobs:batch", json={"jobs": items}, headers=AUTH, timeout=30)
    assert response.status_code == 202, response.text
    batch = response.json()
    assert batch["count"] == 12 and len(batch["job_ids"]) == 12 and batch["counts"]["queued"] == 12
    assert response.headers["Location"] == f"/v1/batches/{batch['id']}"
    assert _queued_messages(redis_client) == 12
    worker = start_worker(rf_settings_env, concurrency=2)
    try:
        # The CLI's live view follows it to the end and exits 0 only when all succeeded.
        watched = CliRunner().invoke(cli_app, ["--api-url", api, "--api-key", OPERATOR_KEY, "batch", "watch",
                                               batch["id"]], env={"COLUMNS": "200"}, catch_exceptions=False)
        done = httpx.get(f"{api}/v1/batches/{batch['id']}", headers=AUTH).json()
    finally:
        worker.stop()
    assert watched.exit_code == 0, watched.output
    assert f"12/12  succeeded 12" in watched.output
    assert done["counts"]["succeeded"] == 12 and sum(done["counts"].values()) == 12
    # Each job is an ordinary job, and the id list pages with a cursor in submit order.
    first = httpx.get(f"{api}/v1/batches/{batch['id']}", params={"limit": 5}, headers=AUTH).json()
    second = httpx.get(f"{api}/v1/batches/{batch['id']}", params={"limit": 5, "cursor": first["next_cursor"]},
                       headers=AUTH).json()
    assert first["job_ids"] + second["job_ids"] == batch["job_ids"][:10]
    job = httpx.get(f"{api}/v1/jobs/{batch['job_ids'][0]}", headers=AUTH).json()
    assert job["status"] == "succeeded" and job["priority"] == "low"


def test_a_batch_with_one_invalid_item_is_refused_whole(api, redis_client, clip, data_dir):
    good = {"kind": "probe", "input": clip.as_uri()}
    outside = {"kind": "probe", "input": (data_dir.parent / "elsewhere.mp4").as_uri()}  # not under an allowed root
    response = httpx.post(f"{api}/v1/jobs:batch", json={"jobs": [good, good, outside, good]}, headers=AUTH)
    assert response.status_code == 422, response.text
    [problem] = response.json()["error"]["details"]
    assert problem["index"] == 2 and problem["field"] == "jobs.2.input"
    # A schema error names its item too.
    response = httpx.post(f"{api}/v1/jobs:batch", json={"jobs": [good, {"kind": "probe"}]}, headers=AUTH)
    assert response.status_code == 422
    assert [d["field"] for d in response.json()["error"]["details"]] == ["jobs.1.probe.input"]
    assert response.json()["error"]["details"][0]["index"] == 1
    # A chunked transcode is a workflow, never one job of a batch.
    chunked = {"kind": "transcode", "input": clip.as_uri(),
               "params": {"renditions": [{"height": 120}], "chunking": {"chunk_duration_s": 2}}}
    response = httpx.post(f"{api}/v1/jobs:batch", json={"jobs": [good, chunked]}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert [d["field"] for d in response.json()["error"]["details"]] == ["jobs.1.params.chunking"]
    too_many = httpx.post(f"{api}/v1/jobs:batch", json={"jobs": [good] * 1001}, headers=AUTH)
    assert too_many.status_code == 422
    assert _queued_messages(redis_client) == 0 and redis_client.zcard("rf:jobs:all") == 0
    assert not redis_client.keys("rf:job:*") and not redis_client.keys("rf:batch:*")


def test_a_batch_honours_idempotency_key_and_tenancy(api, redis_client, clip):
    body = {"jobs": [{"kind": "probe", "input": clip.as_uri()}] * 3}
    key = {"Idempotency-Key": "nightly-42"}
    first = httpx.post(f"{api}/v1/jobs:batch", json=body, headers=AUTH | key)
    again = httpx.post(f"{api}/v1/jobs:batch", json=body, headers=AUTH | key)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    assert _queued_messages(redis_client) == 3
    changed = httpx.post(f"{api}/v1/jobs:batch", json={"jobs": body["jobs"][:2]}, headers=AUTH | key)
    assert changed.status_code == 409
    other = {"Authorization": f"Bearer {create_api_key(redis_client, 'other', frozenset({Scope.jobs}))}"}
    assert httpx.get(f"{api}/v1/batches/{first.json()['id']}", headers=other).status_code == 404
    assert httpx.get(f"{api}/v1/batches/{'0' * 32}", headers=AUTH).status_code == 404
    assert httpx.get(f"{api}/v1/jobs/{first.json()['job_ids'][0]}", headers=other).status_code == 404


def test_cli_batch_submit_reads_json_lines_or_an_array(api, redis_client, clip, tmp_path):
    lines = tmp_path / "jobs.jsonl"
    lines.write_text("\n".join(json.dumps({"kind": "probe", "input": clip.as_uri()}) for _ in range(2)) + "\n")
    array = tmp_path / "jobs.json"
    array.write_text(json.dumps([{"kind": "probe", "input": clip.as_uri(), "priority": "high"}]))
    runner = CliRunner()
    for path, count in ((lines, 2), (array, 1)):
        result = runner.invoke(cli_app, ["--api-url", api, "--api-key", OPERATOR_KEY, "batch", "submit", str(path),
                                         "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["count"] == count
    assert _queued_messages(redis_client) == 3
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"kind": "probe", "input": "file:///etc/passwd"}) + "\n")
    result = runner.invoke(cli_app, ["--api-url", api, "--api-key", OPERATOR_KEY, "batch", "submit", str(bad)])
    assert result.exit_code != 0 and "jobs.0.input" in result.output
