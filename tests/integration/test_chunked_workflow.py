"""Chunked transcode as a workflow, from POST /v1/jobs, through real workers, beat and
ffmpeg: the output holds against a single-pass encode of the same settings, and a
workflow whose worker is killed mid-way resumes by encoding only the missing chunks."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from renderfarm.api.app import create_app
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobStore, kind_index
from renderfarm.core.redis_conn import redis_client as make_redis
from tests.support.chunked import FRAME_S, RENDITION, SHOT_FRAMES, SHOTS, make_source
from tests.support.jobs import start_beat
from tests.support.media import make_clip
from tests.support.procs import ServiceProcess, start_worker, wait_for
from tests.support.quality import assert_chunked_matches_single, stream_timing

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def api(rf_settings_env):
    with TestClient(create_app(Settings(api_keys=[KEY]))) as client:
        yield client


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


def get(api, path) -> dict:
    response = api.get(path, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def wait_done(api, workflow_id, timeout=180) -> dict:
    return wait_for(lambda: (flow := get(api, f"/v1/workflows/{workflow_id}"))["status"] in TERMINAL and flow,
                    timeout, what=f"workflow {workflow_id} to end")


def steps_of(flow) -> dict[str, dict]:
    return {step["name"]: step for step in flow["steps"]}


def local(uri: str) -> Path:
    assert uri.startswith("file://")
    return Path(uri[len("file://"):])


def submit_chunked(api, source: Path, renditions: list[dict], chunking: dict) -> dict:
    response = api.post("/v1/jobs", headers=AUTH, json={"kind": "transcode", "input": source.as_uri(),
                                                         "params": {"renditions": renditions, "chunking": chunking}})
    assert response.status_code == 202, response.text
    assert response.headers["Location"] == f"/v1/workflows/{response.json()['id']}"
    assert response.json()["template"] == "chunked-transcode"
    return response.json()


def test_a_chunked_transcode_job_matches_a_single_pass_encode(api, rf_settings_env, procs, data_dir, tmp_path):
    procs.append(start_worker(rf_settings_env, concurrency=2))
    source = make_source(data_dir / "inputs" / "source.mp4")
    flow = submit_chunked(api, source, [RENDITION, {"height": 120, "preset": "veryfast", "name": "small"}],
                          {"chunk_duration_s": 4})
    single = api.post("/v1/jobs", headers=AUTH, json={"kind": "transcode", "input": source.as_uri(),
                                                      "params": {"renditions": [RENDITION]}})
    assert single.status_code == 202 and single.json()["kind"] == "transcode"  # no chunking: an ordinary job
    done = wait_done(api, flow["id"])
    steps = steps_of(done)
    assert done["status"] == "succeeded", steps
    chunk_steps = [name for name in steps if name.startswith("split-0.chunk-")]
    assert len(chunk_steps) >= 3 and len([n for n in steps if n.startswith("split-1.chunk-")]) == len(chunk_steps)
    assert set(steps["concat-0"]["outputs"]) == {"240p.mp4"} and set(steps["concat-1"]["outputs"]) == {"small.mp4"}
    # The audio was encoded once per rendition by its own step, beside the chunks, and copied by the concat.
    for concat in ("concat-0", "concat-1"):
        assert set(steps[f"{concat}.audio"]["outputs"]) == {"audio.m4a"}
        concat_job = get(api, f"/v1/jobs/{steps[concat]['job_id']}")
        assert concat_job["params"]["audio"] == steps[f"{concat}.audio"]["outputs"]["audio.m4a"]
    reference_job = wait_for(lambda: (j := get(api, f"/v1/jobs/{single.json()['id']}"))["status"] in TERMINAL and j,
                             120, what="the single-pass job")
    assert reference_job["status"] == "succeeded"

    chunked_path = local(steps["concat-0"]["outputs"]["240p.mp4"])
    single_path = local({o["name"]: o["uri"] for o in reference_job["result"]["outputs"]}["240p.mp4"])
    chunked, reference = stream_timing(chunked_path), stream_timing(single_path)
    assert chunked["video"]["packets"] == reference["video"]["packets"] == SHOTS * SHOT_FRAMES
    assert chunked["video"]["duration"] == pytest.approx(reference["video"]["duration"], abs=FRAME_S)
    for kind in ("video", "audio"):
        assert chunked[kind]["start"] == pytest.approx(reference[kind]["start"], abs=0.020), kind
    assert chunked["audio"]["duration"] == pytest.approx(reference["audio"]["duration"], abs=0.020)
    assert_chunked_matches_single(chunked_path, single_path, source, tmp_path)
    small = stream_timing(local(steps["concat-1"]["outputs"]["small.mp4"]))
    assert small["video"]["packets"] == SHOTS * SHOT_FRAMES


def test_automatic_chunking_makes_a_short_source_one_chunk(rf_settings_env, procs, data_dir, monkeypatch):
    monkeypatch.setenv("RF_CHUNKING_MIN_DURATION_S", "60")
    procs.append(start_worker(rf_settings_env))
    clip = make_clip(data_dir / "inputs" / "clip.mp4", duration=6)
    with TestClient(create_app(Settings(api_keys=[KEY]))) as client:
        response = client.post("/v1/jobs", headers=AUTH, json={"kind": "transcode", "input": clip.as_uri(),
                                                              "params": {"renditions": [{"height": 120}]}})
        assert response.status_code == 202 and response.json()["template"] == "chunked-transcode", response.text
        done = wait_done(client, response.json()["id"], 120)
        opted_out = client.post("/v1/jobs", headers=AUTH, json={
            "kind": "transcode", "input": clip.as_uri(), "params": {"renditions": [{"height": 120}], "chunking": False}})
        assert opted_out.status_code == 202 and opted_out.json()["kind"] == "transcode", opted_out.text  # one job
    steps = steps_of(done)
    assert done["status"] == "succeeded", steps
    assert [n for n in steps if ".chunk-" in n] == ["split-0.chunk-0000"]  # shorter than 60 s: one chunk
    assert stream_timing(local(steps["concat-0"]["outputs"]["120p.mp4"]))["video"]["packets"] == 150


def _ledger_starts(ledger: Path) -> dict[str, int]:
    starts: dict[str, int] = {}
    for line in ledger.read_text().splitlines():
        _, job_id, _, event = line.split()[:4]
        if event == "start":
            starts[job_id] = starts.get(job_id, 0) + 1
    return starts


def test_a_killed_chunked_transcode_resumes_encoding_only_the_missing_chunks(api, rf_settings_env, procs, data_dir,
                                                                               store):
    ledger = data_dir / "runs.ledger"
    env = dict(rf_settings_env, RF_RUN_LEDGER=str(ledger), RF_ORPHAN_AFTER_S="3")
    source = make_clip(data_dir / "inputs" / "long.mp4", duration=40, width=640, height=360)
    worker = start_worker(env, concurrency=2)
    procs.append(worker)
    procs.append(start_beat(env))
    flow = submit_chunked(api, source, [{"height": 360, "preset": "medium"}], {"chunk_duration_s": 4, "threads": 1})

    def chunk_steps(flow):
        return {name: step for name, step in steps_of(flow).items() if ".chunk-" in name}

    def midway():
        now = get(api, f"/v1/workflows/{flow['id']}")
        chunks = chunk_steps(now)
        done = [s for s in chunks.values() if s["status"] == "succeeded"]
        running = [s for s in chunks.values() if s["status"] == "started" and s["job_status"] == "running"]
        return len(done) >= 2 and running and now

    before = wait_for(midway, 180, what="some chunks to succeed while others run")
    worker.stop(signal.SIGKILL, 5)  # the worker and its pool processes, mid-encode
    # What the kill left, read from the jobs (a step's own status may lag its job's by one advance).
    at_kill = {name: get(api, f"/v1/jobs/{step['job_id']}")
               for name, step in chunk_steps(get(api, f"/v1/workflows/{flow['id']}")).items() if step["job_id"]}
    kept = {name: job for name, job in at_kill.items() if job["status"] == "succeeded"}
    cut_short = [name for name, job in at_kill.items() if job["status"] == "running"]
    total = len(chunk_steps(before))
    assert cut_short, "no chunk was mid-encode when the worker was killed"
    assert 2 <= len(kept) < total

    procs.append(start_worker(env, concurrency=2))
    done = wait_done(api, flow["id"], 240)
    if done["status"] == "failed":  # a chunk whose attempts the kill spent: the workflow's retry resumes it
        assert api.post(f"/v1/workflows/{flow['id']}/retry", headers=AUTH).status_code == 202
        done = wait_done(api, flow["id"], 240)
    steps = steps_of(done)
    assert done["status"] == "succeeded", steps
    starts = _ledger_starts(ledger)
    for name, job in kept.items():  # kept as they were: same job, one attempt, one run
        assert steps[name]["job_id"] == job["id"] and steps[name]["previous_jobs"] == []
        again = get(api, f"/v1/jobs/{job['id']}")
        assert again["attempts"] == 1 and again["finished_at"] == job["finished_at"]
        assert starts[job["id"]] == 1, name
    missing = [name for name in chunk_steps(done) if name not in kept]
    assert missing and all(starts.get(steps[name]["job_id"], 0) >= 1 for name in missing)
    for name in cut_short:  # the chunks killed mid-encode ran again: a second attempt, or a new job on retry
        step = steps[name]
        assert steps[name]["previous_jobs"] or get(api, f"/v1/jobs/{step['job_id']}")["attempts"] >= 2, name
    assert starts[steps["split-0"]["job_id"]] == 1  # the split is not run again either
    # One chunk_encode job per chunk, plus one new job per chunk a retry re-ran: none for the kept ones.
    retried = sum(len(steps[name]["previous_jobs"]) for name in missing)
    assert store.redis.zcard(kind_index("chunk_encode")) == total + retried
    out = stream_timing(local(steps["concat-0"]["outputs"]["360p.mp4"]))
    assert out["video"]["packets"] == 40 * 25
