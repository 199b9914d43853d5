"""Workflows through real Celery workers, a real redis-server, beat and ffmpeg: a
workflow runs to the end with outputs passed downstream; cancel stops it; a failed
step retried after the fault is fixed re-runs only it and its dependants; a step
never starts twice when the worker of the step before it dies as that step ends."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from fastapi.testclient import TestClient

from renderfarm.api.app import create_app
from renderfarm.core.jobs import JobStatus
from renderfarm.core.messages import message_task_id
from renderfarm.core.redis_conn import redis_client as make_redis
from renderfarm.core.settings import Settings
from renderfarm.core.store import WORKFLOW_DUE, JobStore, events_channel, kind_index, token_pid
from renderfarm.core.workflow_store import WorkflowStore
from renderfarm.core.workflows import WorkflowSpec
from tests.support.jobs import ffmpeg_processes, start_beat
from tests.support.media import ffprobe, make_clip
from tests.support.procs import ServiceProcess, start_worker, wait_for

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def store(rf_settings_env):
    settings = Settings()
    return JobStore(make_redis(settings, socket_timeout_s=5), retention_seconds=settings.retention_seconds)


@pytest.fixture
def api(rf_settings_env):
    with TestClient(create_app(Settings(api_keys=[KEY]))) as client:
        yield client


@pytest.fixture
def procs():
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop(signal.SIGKILL, 5)


@pytest.fixture
def clip(data_dir):
    return make_clip(data_dir / "inputs" / "clip.mp4", duration=2)


def submit(api, body) -> dict:
    response = api.post("/v1/workflows", headers=AUTH, json=body)
    assert response.status_code == 202, response.text
    return response.json()


def get(api, workflow_id) -> dict:
    return api.get(f"/v1/workflows/{workflow_id}", headers=AUTH).json()


def wait_done(api, workflow_id, timeout=120) -> dict:
    return wait_for(lambda: (flow := get(api, workflow_id))["status"] in TERMINAL and flow, timeout,
                    what=f"workflow {workflow_id} to end")


def steps_of(flow) -> dict[str, dict]:
    return {step["name"]: step for step in flow["steps"]}


def job(api, job_id) -> dict:
    return api.get(f"/v1/jobs/{job_id}", headers=AUTH).json()


def test_a_workflow_runs_to_the_end_with_outputs_passed_downstream(api, rf_settings_env, procs, clip):
    procs.append(start_worker(rf_settings_env, concurrency=2))  # no beat: the workers advance it themselves
    flow = submit(api, {"input": clip.as_uri(), "steps": [
        {"name": "transcode", "kind": "transcode", "params": {"renditions": [{"height": 120}, {"height": 240}]}},
        {"name": "thumbs", "kind": "thumbnail", "needs": ["transcode"],
         "input": {"from": "transcode", "output": "240p.mp4"}, "params": {"count": 2, "sprite": True}},
        {"name": "audio", "kind": "extract_audio", "needs": ["transcode"],
         "input": {"from": "transcode", "output": "120p.mp4"}},
        {"name": "probe", "kind": "probe", "needs": ["audio"], "input": {"from": "audio", "output": "audio.wav"}},
    ]})
    done = wait_done(api, flow["id"])
    steps = steps_of(done)
    assert done["status"] == "succeeded", steps
    assert done["progress"] == 100 and all(s["status"] == "succeeded" for s in steps.values())
    transcode = job(api, steps["transcode"]["job_id"])
    outputs = {o["name"]: o["uri"] for o in transcode["result"]["outputs"]}
    assert steps["transcode"]["outputs"] == outputs
    assert job(api, steps["thumbs"]["job_id"])["input"] == outputs["240p.mp4"]
    assert job(api, steps["audio"]["job_id"])["input"] == outputs["120p.mp4"]
    probe = job(api, steps["probe"]["job_id"])
    assert probe["input"] == steps["audio"]["outputs"]["audio.wav"]
    # The probe read what extract_audio wrote: audio only, 16 kHz.
    assert "audio" in json.dumps(probe["result"]["metadata"]) and "16000" in json.dumps(probe["result"]["metadata"])
    assert set(steps["thumbs"]["outputs"]) == {"thumb-0001.jpg", "thumb-0002.jpg", "sprite.jpg"}
    # The thumbnails came from the 240p rendition, not from the source (320x240 -> 240p keeps 320 wide).
    thumb = ffprobe(__import__("pathlib").Path(steps["thumbs"]["outputs"]["thumb-0001.jpg"][7:]))
    assert thumb["streams"][0]["width"] == 320
    assert all(job(api, s["job_id"])["attempts"] == 1 for s in steps.values())


def test_cancel_mid_workflow_stops_the_running_step_and_nothing_downstream_runs(api, rf_settings_env, procs, store,
                                                                               data_dir):
    long_clip = make_clip(data_dir / "inputs" / "long.mp4", duration=40, width=640, height=360)
    worker = start_worker(rf_settings_env)
    procs.append(worker)
    procs.append(start_beat(rf_settings_env))
    flow = submit(api, {"input": long_clip.as_uri(), "steps": [
        {"name": "transcode", "kind": "transcode", "params": {"renditions": [{"height": 360, "preset": "medium"}]}},
        {"name": "thumbs", "kind": "thumbnail", "needs": ["transcode"],
         "input": {"from": "transcode", "output": "360p.mp4"}},
        {"name": "audio", "kind": "extract_audio", "needs": ["thumbs"]},
    ]})
    running_id = steps_of(flow)["transcode"]["job_id"]
    wait_for(lambda: job(api, running_id)["status"] == "running" and job(api, running_id)["progress"] > 0, 60,
             what="the first step to run")
    cancelled = api.post(f"/v1/workflows/{flow['id']}/cancel", headers=AUTH)
    assert cancelled.status_code == 202
    wait_for(lambda: not ffmpeg_processes(worker), 30, what="ffmpeg to stop")
    done = wait_done(api, flow["id"], 30)
    steps = steps_of(done)
    assert done["status"] == "cancelled"
    assert steps["transcode"]["status"] == "cancelled" and job(api, running_id)["status"] == "cancelled"
    assert steps["thumbs"]["status"] == steps["audio"]["status"] == "cancelled"
    time.sleep(3)  # beat passes: nothing may start after the cancel
    assert store.redis.zcard(kind_index("thumbnail")) == store.redis.zcard(kind_index("extract_audio")) == 0
    assert get(api, flow["id"])["status"] == "cancelled"


def test_a_failed_step_retried_after_the_fix_reruns_only_it_and_its_dependants(api, rf_settings_env, procs, clip,
                                                                                data_dir, store):
    broken = data_dir / "inputs" / "other.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    procs.append(start_worker(rf_settings_env, concurrency=2))
    flow = submit(api, {"input": clip.as_uri(), "failure_policy": "continue", "steps": [
        {"name": "transcode", "kind": "transcode", "params": {"renditions": [{"height": 120}]}},
        {"name": "thumbs", "kind": "thumbnail", "needs": ["transcode"],
         "input": {"from": "transcode", "output": "120p.mp4"}, "params": {"count": 1}},
        {"name": "other", "kind": "probe", "input": broken.as_uri()},
        {"name": "audio", "kind": "extract_audio", "needs": ["other"], "input": broken.as_uri()},
    ]})
    failed = wait_done(api, flow["id"])
    steps = steps_of(failed)
    assert failed["status"] == "failed"
    assert steps["other"]["status"] == "failed" and steps["audio"]["status"] == "skipped"
    assert steps["transcode"]["status"] == steps["thumbs"]["status"] == "succeeded"
    kept = {name: (steps[name]["job_id"], job(api, steps[name]["job_id"])["finished_at"])
            for name in ("transcode", "thumbs")}

    make_clip(broken, duration=1)  # the fix: the input is whole now
    retried = api.post(f"/v1/workflows/{flow['id']}/retry", headers=AUTH)
    assert retried.status_code == 202, retried.text
    done = wait_done(api, flow["id"])
    steps = steps_of(done)
    assert done["status"] == "succeeded", steps
    assert steps["other"]["previous_jobs"] == [steps_of(failed)["other"]["job_id"]]
    assert steps["other"]["job_id"] != steps_of(failed)["other"]["job_id"]
    assert job(api, steps["audio"]["job_id"])["status"] == "succeeded"
    for name, (job_id, finished_at) in kept.items():  # kept: same job, run once, not touched
        assert steps[name]["job_id"] == job_id and steps[name]["previous_jobs"] == []
        again = job(api, job_id)
        assert again["attempts"] == 1 and again["finished_at"] == finished_at
    assert store.redis.zcard(kind_index("transcode")) == store.redis.zcard(kind_index("thumbnail")) == 1


def test_fail_fast_stops_the_running_branch_when_another_step_fails(api, rf_settings_env, procs, data_dir, store):
    long_clip = make_clip(data_dir / "inputs" / "long.mp4", duration=40, width=640, height=360)
    broken = data_dir / "inputs" / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    worker = start_worker(rf_settings_env, concurrency=2)
    procs.append(worker)
    flow = submit(api, {"input": long_clip.as_uri(), "steps": [  # fail_fast: the default for a DAG
        {"name": "transcode", "kind": "transcode", "params": {"renditions": [{"height": 360, "preset": "medium"}]}},
        {"name": "thumbs", "kind": "thumbnail", "needs": ["transcode"],
         "input": {"from": "transcode", "output": "360p.mp4"}},
        {"name": "gate", "kind": "extract_audio", "needs": ["check"]},
        {"name": "check", "kind": "probe", "input": broken.as_uri()},
    ]})
    running_id = steps_of(flow)["transcode"]["job_id"]
    wait_for(lambda: job(api, running_id)["status"] == "running", 60, what="the long step to run")
    done = wait_done(api, flow["id"], 60)
    steps = steps_of(done)
    assert done["status"] == "failed"
    assert steps["check"]["status"] == "failed" and steps["transcode"]["status"] == "cancelled"
    assert steps["thumbs"]["status"] == steps["gate"]["status"] == "skipped"
    assert job(api, running_id)["status"] == "cancelled"
    wait_for(lambda: not ffmpeg_processes(worker), 30, what="the cancelled step's ffmpeg to stop")
    assert store.redis.zcard(kind_index("thumbnail")) == store.redis.zcard(kind_index("extract_audio")) == 0


def test_a_step_never_starts_twice_when_the_worker_of_the_step_before_dies_as_it_ends(
        api, rf_settings_env, procs, clip, store, redis_server, data_dir):
    """SIGKILL of the pool process that ran a step, the moment that step's job is
    succeeded (the event of that very transition): wherever it dies (before or after it
    advanced the workflow), the next step's job exists once, and it runs once - or
    twice only when its first run was on the process this test killed (the ledger
    of runs tells which)."""
    ledger = data_dir / "runs.ledger"
    env = dict(rf_settings_env, RF_RUN_LEDGER=str(ledger))
    procs.append(start_worker(env))
    procs.append(start_beat(rf_settings_env))
    for round_ in range(3):
        flow = submit(api, {"input": clip.as_uri(), "steps": [
            {"name": "transcode", "kind": "transcode", "params": {"renditions": [{"height": 120}]}},
            {"name": "thumbs", "kind": "thumbnail", "needs": ["transcode"],
             "input": {"from": "transcode", "output": "120p.mp4"}, "params": {"count": 1}},
        ]})
        first = steps_of(flow)["transcode"]["job_id"]
        killed: list[int] = []
        listener = redis_server.client().pubsub()
        listener.subscribe(events_channel(first))

        def kill_on_success():
            for message in listener.listen():
                if message["type"] == "message" and json.loads(message["data"])["status"] == "succeeded":
                    pid = token_pid(store.run_state(first).last_token)
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return

        thread = threading.Thread(target=kill_on_success, daemon=True)
        thread.start()
        done = wait_done(api, flow["id"], 120)
        thread.join(5)
        listener.close()
        assert killed, f"round {round_}: the step's end was not seen"
        steps = steps_of(done)
        assert done["status"] == "succeeded", steps
        thumbs = job(api, steps["thumbs"]["job_id"])
        assert thumbs["status"] == "succeeded" and steps["thumbs"]["previous_jobs"] == []
        assert store.redis.zcard(kind_index("thumbnail")) == round_ + 1  # one thumbnail job per workflow
        starts = [line.split()[2] for line in ledger.read_text().splitlines()
                  if line.split()[1] == thumbs["id"] and line.split()[3] == "start"]
        on_killed = [token for token in starts if token_pid(token) == killed[0]]
        assert len(starts) - len(on_killed) == 1 and thumbs["attempts"] == len(starts), (starts, killed)
        assert store.redis.zcard(WORKFLOW_DUE) == 0


def _ended_without_advance(store, workflows, spec):
    """A workflow whose first step's job ended (the terminal transition, as its worker
    writes it) and that nobody advanced: the worker died right after the write."""
    record, _ = workflows.submit(spec, tenant="default")
    first = record.flow.steps["a"].job_id
    claim = store.claim(first, "cpu@gone", max_attempts=3, lease_s=30)
    store.transition(first, JobStatus.succeeded, token=claim.token, fields={"result": {"outputs": [], "metadata": {}}})
    assert first in store.redis.zrange(WORKFLOW_DUE, 0, -1)  # due, in the same call as the end
    assert workflows.get(record.id).flow.steps["b"].job_id is None
    return record, first


def test_concurrent_advances_of_one_step_end_start_each_next_step_once(rf_settings_env, store, clip):
    workflows = WorkflowStore(store)
    spec = WorkflowSpec.model_validate({"input": clip.as_uri(), "steps": [
        {"name": "a", "kind": "probe"}, {"name": "b", "kind": "probe", "needs": ["a"]},
        {"name": "c", "kind": "probe", "needs": ["a"]}]})
    for _ in range(5):
        store.redis.flushdb()
        record, first = _ended_without_advance(store, workflows, spec)
        barrier = threading.Barrier(8)

        def advance():
            barrier.wait()
            workflows.advance(first)

        threads = [threading.Thread(target=advance) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        after = workflows.get(record.id)
        assert after.version == 2  # submit, then exactly one advance
        queued = [message_task_id(raw) for raw in store.redis.lrange("cpu.normal", 0, -1)]
        # a's own message was never consumed here (claimed by hand); b and c are there once each.
        assert sorted(queued) == sorted([first, after.flow.steps["b"].job_id, after.flow.steps["c"].job_id])
        assert store.redis.zcard(kind_index("probe")) == 3
        assert store.redis.zcard(WORKFLOW_DUE) == 0


def test_beat_advances_a_workflow_whose_worker_died_as_the_step_ended(rf_settings_env, store, procs, clip):
    workflows = WorkflowStore(store)
    spec = WorkflowSpec.model_validate({"input": clip.as_uri(), "steps": [
        {"name": "a", "kind": "probe"}, {"name": "b", "kind": "probe", "needs": ["a"]}]})
    record, first = _ended_without_advance(store, workflows, spec)
    procs.append(start_beat(rf_settings_env))
    wait_for(lambda: workflows.get(record.id).flow.steps["b"].job_id, 15, what="beat to advance the workflow")
    time.sleep(2.5)  # more beat passes change nothing
    assert workflows.get(record.id).version == 2 and store.redis.zcard(kind_index("probe")) == 2
    assert store.redis.zcard(WORKFLOW_DUE) == 0


def test_a_step_job_is_deleted_and_requeued_only_through_its_workflow(api, rf_settings_env, procs, data_dir, store):
    """A step's job deleted or requeued on its own would leave its workflow waiting
    for a record that is gone, or running a step it does not know about."""
    broken = data_dir / "inputs" / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    procs.append(start_worker(rf_settings_env, concurrency=1))
    flow = submit(api, {"input": broken.as_uri(), "steps": [{"name": "probe", "kind": "probe"}]})
    failed = wait_done(api, flow["id"])
    job_id = steps_of(failed)["probe"]["job_id"]
    assert job(api, job_id)["status"] == "failed"
    review = api.get("/v1/review", headers=AUTH).json()
    assert [item["job"]["id"] for item in review["items"]] == [job_id]  # failed for good: in review

    deleted = api.delete(f"/v1/jobs/{job_id}", headers=AUTH)
    assert deleted.status_code == 409, deleted.text
    assert deleted.json()["error"]["details"]["workflow_id"] == flow["id"]
    requeued = api.post(f"/v1/review/{job_id}/requeue", headers=AUTH)
    assert requeued.status_code == 409, requeued.text
    bulk = api.post("/v1/review:requeue", headers=AUTH, json={"kind": "probe"})
    assert bulk.status_code == 200 and bulk.json()["requeued"] == []
    assert job(api, job_id)["status"] == "failed"  # untouched by all three
    assert get(api, flow["id"])["status"] == "failed"
