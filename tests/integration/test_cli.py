"""The ``renderfarm`` CLI against a real API process, a real redis-server and a real CPU worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from renderfarm.cli import app
from tests.support.media import make_clip
from tests.support.procs import free_port, start_api, start_worker, wait_for

KEY = "cli-test-key-0123456789"
RENDERFARM = Path(sys.executable).parent / "renderfarm"


@pytest.fixture
def farm(rf_settings_env):
    """(env, base URL) of a running API; no workers."""
    env = dict(rf_settings_env, RF_API_KEYS=KEY)
    api, base = start_api(env)
    try:
        yield env, base
    finally:
        api.stop()


@pytest.fixture
def clip(data_dir):
    return make_clip(data_dir / "inputs" / "clip.mp4", duration=1)


def cli(base: str, *args: str, key: str | None = KEY):
    env = {"RF_API_URL": base, "RF_API_KEY": key}
    result = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return result


def api_get(base: str, path: str) -> dict:
    response = httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {KEY}"}, timeout=5)
    response.raise_for_status()
    return response.json()


def test_submit_wait_probe_with_a_real_worker(farm, clip, data_dir):
    env, base = farm
    worker = start_worker(env, pool="cpu")
    try:
        result = cli(base, "submit", "probe", str(clip), "--label", "team=media", "--wait")
        assert result.exit_code == 0, result.output
        assert "succeeded" in result.output
        job_id = result.stdout.strip().splitlines()[0]
        assert len(job_id) == 32

        job = api_get(base, f"/v1/jobs/{job_id}")
        assert job["status"] == "succeeded" and job["input"] == clip.as_uri()
        assert job["labels"] == {"team": "media"}

        # The listing shows it ...
        listed = cli(base, "jobs")
        assert listed.exit_code == 0, listed.output
        assert job_id in listed.output and "probe" in listed.output and "succeeded" in listed.output
        # ... filtered, and through every page
        assert job_id in cli(base, "jobs", "--status", "succeeded", "--kind", "probe").output
        assert job_id not in cli(base, "jobs", "--status", "failed").output

        # job --json is the raw record; without it, readable details
        raw = cli(base, "job", job_id, "--json")
        assert raw.exit_code == 0, raw.output
        parsed = json.loads(raw.stdout)
        assert parsed["id"] == job_id and parsed["status"] == "succeeded" and parsed["kind"] == "probe"
        details = cli(base, "job", job_id)
        assert details.exit_code == 0 and job_id in details.output and "succeeded" in details.output

        # A file that is not media fails: --wait exits 1 with the error type and message
        junk = data_dir / "inputs" / "junk.mp4"
        junk.write_bytes(b"this is not a video file" * 100)
        failed = cli(base, "submit", "probe", str(junk), "--wait")
        assert failed.exit_code == 1, failed.output
        assert "failed" in failed.output and "invalid_media" in failed.output

        # workers shows the live worker
        workers = cli(base, "workers")
        assert workers.exit_code == 0 and "cpu" in workers.output
    finally:
        worker.stop()


def test_jobs_all_follows_the_cursor(farm, clip):
    env, base = farm
    ids = []
    for n in range(5):
        result = cli(base, "submit", "probe", str(clip), "--priority", "low", "--label", f"n={n}")
        assert result.exit_code == 0, result.output
        ids.append(result.stdout.strip())
    one_page = json.loads(cli(base, "jobs", "--limit", "2", "--json").stdout)
    assert len(one_page["jobs"]) == 2 and one_page["next_cursor"]
    every = json.loads(cli(base, "jobs", "--limit", "2", "--all", "--json").stdout)
    assert sorted(job["id"] for job in every["jobs"]) == sorted(ids)
    table = cli(base, "jobs", "--limit", "2", "--all")
    assert all(job_id in table.output for job_id in ids)


def test_pause_submit_cancel_retry_and_queues(farm, clip):
    env, base = farm
    paused = cli(base, "pause", "cpu.low")
    assert paused.exit_code == 0 and "paused" in paused.output

    submitted = cli(base, "submit", "probe", str(clip), "--priority", "low", "--idempotency-key", "k-1")
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    # same key, same job
    assert cli(base, "submit", "probe", str(clip), "--priority", "low", "--idempotency-key", "k-1").stdout.strip() == job_id
    assert api_get(base, f"/v1/jobs/{job_id}")["queue"] == "cpu.low"

    queues = cli(base, "queues")
    assert queues.exit_code == 0, queues.output
    row = next(line for line in queues.output.splitlines() if line.startswith("cpu.low"))
    assert row.split()[1] == "1" and "paused" in row
    queues_json = json.loads(cli(base, "queues", "--json").stdout)
    assert next(q for q in queues_json if q["name"] == "cpu.low")["depth"] == 1

    cancelled = cli(base, "cancel", job_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert "cancelled" in cancelled.output
    assert api_get(base, f"/v1/jobs/{job_id}")["status"] == "cancelled"

    # cancelling twice is an API conflict: exit 2
    again = cli(base, "cancel", job_id)
    assert again.exit_code == 2 and "conflict" in again.output

    retried = cli(base, "retry", job_id)
    assert retried.exit_code == 0, retried.output
    assert "queued" in retried.output
    assert api_get(base, f"/v1/jobs/{job_id}")["status"] == "queued"

    resumed = cli(base, "resume", "cpu.low")
    assert resumed.exit_code == 0 and "resumed" in resumed.output
    assert not next(q for q in api_get(base, "/v1/queues") if q["name"] == "cpu.low")["paused"]


def test_wait_on_a_job_that_gets_cancelled_exits_1(farm, clip):
    """--wait in a real subprocess (the console script) follows the SSE stream to 'cancelled'."""
    env, base = farm
    assert cli(base, "pause", "cpu.normal").exit_code == 0
    proc = subprocess.Popen([str(RENDERFARM), "--api-url", base, "submit", "probe", str(clip), "--wait"],
                            env={**os.environ, "RF_API_KEY": KEY}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        def queued_id():
            jobs = api_get(base, "/v1/jobs?status=queued")["jobs"]
            return jobs[0]["id"] if jobs else None

        job_id = wait_for(queued_id, 20, what="the submitted job")
        # Whether the CLI subscribed before or after this, the stream starts with the current state.
        assert cli(base, "cancel", job_id).exit_code == 0
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stdout + stderr
    assert stdout.splitlines()[0] == job_id
    assert "cancelled" in stdout


def test_unknown_kind_is_an_api_error_listing_the_kinds(farm, clip):
    _, base = farm
    result = cli(base, "submit", "no_such_kind", str(clip))
    assert result.exit_code == 2, result.output
    assert "validation_error" in result.output
    for kind in ("probe", "transcode", "thumbnail", "extract_audio", "transcribe", "vision"):
        assert kind in result.output


def test_invalid_params_list_the_fields(farm, clip):
    _, base = farm
    result = cli(base, "submit", "transcode", str(clip), "--rendition", "height=99999")
    assert result.exit_code == 2, result.output
    assert "params.renditions.0.height" in result.output
    ok = cli(base, "submit", "transcode", str(clip), "--rendition", "height=120,crf=30", "-r", "240p")
    assert ok.exit_code == 0, ok.output
    job = api_get(base, f"/v1/jobs/{ok.stdout.strip()}")
    assert [r["name"] for r in job["params"]["renditions"]] == ["120p", "240p"]
    assert job["params"]["renditions"][0]["crf"] == 30


def test_input_outside_the_allowed_roots_is_refused(farm, tmp_path):
    _, base = farm
    outside = make_clip(tmp_path / "elsewhere" / "clip.mp4", duration=1)
    result = cli(base, "submit", "probe", str(outside))
    assert result.exit_code == 2 and "invalid_input" in result.output


def test_bad_command_line_params_exit_2_without_calling_the_api(farm, clip):
    _, base = farm
    result = cli(base, "submit", "probe", str(clip), "--param", "novalue")
    assert result.exit_code == 2 and "KEY=VALUE" in result.output
    assert api_get(base, "/v1/jobs")["jobs"] == []


def test_wrong_key_is_an_api_error(farm):
    _, base = farm
    result = cli(base, "jobs", key="wrong")
    assert result.exit_code == 2 and "unauthorized" in result.output


def test_unknown_job_and_queue_are_api_errors(farm):
    _, base = farm
    missing = cli(base, "job", "0" * 32)
    assert missing.exit_code == 2 and "not_found" in missing.output
    bad_queue = cli(base, "pause", "cpu.urgent")
    assert bad_queue.exit_code == 2 and "unknown queue" in bad_queue.output


def test_unreachable_api_exits_3():
    base = f"http://127.0.0.1:{free_port()}"
    result = cli(base, "jobs")
    assert result.exit_code == 3, result.output
    assert "unreachable" in result.output and base in result.output
    # the console script behaves the same
    proc = subprocess.run([str(RENDERFARM), "--api-url", base, "queues"], capture_output=True, text=True, timeout=30,
                          env={k: v for k, v in os.environ.items() if not k.startswith("RF_")})
    assert proc.returncode == 3 and "unreachable" in proc.stderr


def test_apikey_create_makes_a_working_key(farm, redis_client):
    _, base = farm
    result = CliRunner().invoke(app, ["apikey", "create", "--tenant", "media-team"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert key.startswith("rf_")
    [stored] = redis_client.hgetall("rf:apikeys").values()
    assert json.loads(stored) == {"tenant": "media-team", "scopes": ["jobs"]}
    assert key not in json.dumps(redis_client.hgetall("rf:apikeys"))
    # the API caches stored keys for a couple of seconds
    wait_for(lambda: cli(base, "jobs", key=key).exit_code == 0, 10, interval=0.5, what="the new key to be accepted")


def test_apikey_create_needs_redis_url(monkeypatch):
    monkeypatch.delenv("RF_REDIS_URL", raising=False)
    result = CliRunner().invoke(app, ["apikey", "create"])
    assert result.exit_code == 2 and "RF_REDIS_URL" in result.output


def test_api_key_is_read_from_the_local_key_file(farm, tmp_path, monkeypatch):
    _, base = farm
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / ".api-key").write_text(KEY + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RF_API_KEY", raising=False)
    result = CliRunner().invoke(app, ["--api-url", base, "queues"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "cpu.normal" in result.output


def test_local_refuses_unknown_pools():
    result = CliRunner().invoke(app, ["local", "--pools", "cpu,tpu"])
    assert result.exit_code == 2 and "tpu" in result.output


def test_local_hands_its_options_to_the_local_runner(tmp_path):
    """The runner refuses a busy API port before starting anything: its exit code comes through."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["local", "--data-dir", str(tmp_path / "farm"), "--port", str(port),
                                          "--redis-port", str(free_port()), "--pools", "cpu"])
    assert result.exit_code == 1, result.output
    assert f"port {port} is already in use" in result.output
    assert (tmp_path / "farm" / "inputs").is_dir()


def test_review_list_requeue_with_new_params_dismiss_and_delete(farm, clip):
    env, base = farm
    worker = start_worker(env, pool="cpu")
    try:
        ids = []
        for _ in range(2):
            result = cli(base, "submit", "thumbnail", str(clip), "--params-json", '{"times": [50]}', "--wait")
            assert result.exit_code == 1, result.output  # no frame at 50 s of a 1 s clip
            ids.append(result.stdout.strip().splitlines()[0])
        listed = json.loads(cli(base, "review", "list", "--error-type", "invalid_media", "--json").stdout)
        assert {item["job"]["id"] for item in listed["items"]} == set(ids)
        result = cli(base, "review", "requeue", ids[0], "--params-json", '{"times": [0.5]}')
        assert result.exit_code == 0 and "queued" in result.output, result.output
        wait_for(lambda: api_get(base, f"/v1/jobs/{ids[0]}")["status"] == "succeeded", 60, what="requeued job")
        assert cli(base, "review", "dismiss", ids[1]).exit_code == 0
        assert api_get(base, f"/v1/jobs/{ids[1]}")["status"] == "failed"
        assert "nothing in review" in cli(base, "review", "list").output
        assert cli(base, "delete", ids[0]).exit_code == 0
        assert cli(base, "job", ids[0]).exit_code == 2  # 404
        assert cli(base, "delete", ids[0]).exit_code == 2
    finally:
        worker.stop()
