"""Duration estimates learned from real runs: a real worker, real ffmpeg, a real API.

After a few transcodes of clips of known lengths, a new transcode's estimate (read
while it waits) is within a stated bound of how long it then took, and a job waiting
behind N others is told a later start the larger N is."""

from __future__ import annotations

import signal
import uuid
from datetime import datetime, timezone

import httpx
import pytest

from renderfarm.core import estimates
from renderfarm.core import workflows as wf
from renderfarm.core.jobs import Job, JobResult, JobStatus
from renderfarm.core.queues import Priority
from renderfarm.core.redis_conn import redis_client as make_redis
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobStore
from renderfarm.core.workflow_estimates import for_flow
from tests.support.jobs import TERMINAL, submit, wait_status
from tests.support.media import make_clip
from tests.support.procs import start_api, start_worker, wait_for

KEY = "estimates-test-key"
RENDITIONS = {"renditions": [{"height": 240}]}
# The stated bound: on a shared 2-core machine a run of a few seconds swings by tens of
# per cent between runs, so the estimate must be within half the actual run plus 1 s.
RELATIVE_BOUND, ABSOLUTE_SLACK_S = 0.5, 1.0


@pytest.fixture
def store(rf_settings_env):
    settings = Settings()
    return JobStore(make_redis(settings, socket_timeout_s=5), retention_seconds=settings.retention_seconds)


@pytest.fixture
def farm(rf_settings_env):
    env = dict(rf_settings_env, RF_API_KEYS=KEY)
    worker = start_worker(env, concurrency=1)
    api, base = start_api(env)
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    yield client, worker
    client.close()
    api.stop(signal.SIGKILL, 5)
    worker.stop(signal.SIGKILL, 5)


def _finish(store: JobStore, worker, job_id: str):
    done = wait_status(store, job_id, TERMINAL, timeout=180)
    assert done.status == JobStatus.succeeded, f"{done.error}\n{worker.log()[-3000:]}"
    return done


def test_estimates_learned_from_transcodes_predict_a_new_one_and_starts_grow_with_the_queue(
        store, farm, data_dir):
    api, worker = farm
    inputs = data_dir / "inputs"
    clips = {seconds: make_clip(inputs / f"clip-{seconds}.mp4", duration=seconds) for seconds in (2, 4, 8)}
    new_clip = make_clip(inputs / "clip-6.mp4", duration=6)
    blocker_clip = make_clip(inputs / "blocker.mp4", duration=60, width=640, height=360)

    # Nothing learned yet: no estimate rather than a made-up one.
    first = submit(store, "transcode", clips[2], RENDITIONS)
    assert api.get(f"/v1/jobs/{first.id}").json()["estimated_duration_s"] is None or \
        store.get(first.id).status != JobStatus.queued
    _finish(store, worker, first.id)

    for seconds in (4, 8, 2, 4, 8):
        _finish(store, worker, submit(store, "transcode", clips[seconds], RENDITIONS).id)
    # A probe of the new clip tells the farm its length (as a workflow's first step does).
    _finish(store, worker, submit(store, "probe", new_clip).id)
    # A run is learned just after its job ends (the job's own write comes first).
    fits = wait_for(lambda: (found := estimates.learned(store.redis)).get("pool|cpu", None) is not None
                    and found["pool|cpu"].n == 7 and found, 10, what="the probe to be learned")
    assert fits["transcode|*"].n == fits["transcode|1xh360"].n == 6 and fits["probe|*"].n == 1

    # Hold the only worker with a long job, so what follows waits where it can be read.
    blocker = submit(store, "transcode", blocker_clip, {"renditions": [{"height": 360, "preset": "slow"}]})
    wait_status(store, blocker.id, JobStatus.running, timeout=60)
    target = submit(store, "transcode", new_clip, RENDITIONS)
    behind = [submit(store, "transcode", clips[2], RENDITIONS) for _ in range(3)]
    urgent = submit(store, "transcode", clips[2], RENDITIONS, priority=Priority.high)

    shown = {job.id: api.get(f"/v1/jobs/{job.id}").json() for job in [target, *behind, urgent]}
    for body in shown.values():
        assert body["status"] == "queued" and body["duration_s"] is None
    starts = [shown[job.id]["estimated_start_s"] for job in [target, *behind]]
    assert all(start is not None and start > 0 for start in starts), starts
    assert starts == sorted(starts) and len(set(starts)) == len(starts), f"start must grow with the jobs ahead: {starts}"
    # A high-priority job goes before every normal one, whenever it was submitted.
    assert shown[urgent.id]["estimated_start_s"] < starts[0]
    predicted = shown[target.id]["estimated_duration_s"]
    assert predicted is not None and predicted > 0
    # The listing carries the same estimates.
    listed = {job["id"]: job for job in api.get("/v1/jobs", params={"status": "queued", "limit": 50}).json()["jobs"]}
    assert listed[target.id]["estimated_start_s"] == pytest.approx(starts[0], rel=0.05)
    assert api.get(f"/v1/jobs/{blocker.id}").json()["estimated_start_s"] is None  # running: no start

    api.post(f"/v1/jobs/{blocker.id}/cancel")
    done = _finish(store, worker, target.id)
    actual = api.get(f"/v1/jobs/{done.id}").json()["duration_s"]
    assert actual is not None and actual > 0
    assert abs(predicted - actual) <= RELATIVE_BOUND * actual + ABSOLUTE_SLACK_S, \
        f"estimated {predicted:.2f} s, took {actual:.2f} s"
    for job in [*behind, urgent]:
        _finish(store, worker, job.id)


def test_estimate_fields_are_documented_in_the_openapi_schema(farm):
    api, _ = farm
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    for name in ("estimated_duration_s", "estimated_start_s", "duration_s"):
        assert schemas["JobOut"]["properties"][name]["description"]
    for name in ("estimated_duration_s", "estimated_remaining_s"):
        assert schemas["WorkflowOut"]["properties"][name]["description"]


def _learn(client, kind: str, params: dict, input_uri: str, metadata: dict, seconds: float) -> None:
    job = Job(id=uuid.uuid4().hex, kind=kind, input=input_uri, params=params, queue="cpu.normal",
              created_at=datetime.now(timezone.utc), status=JobStatus.succeeded, result=JobResult(metadata=metadata))
    estimates.learn(client, job, "cpu", seconds, media_ttl_s=60)


def test_a_workflow_not_started_is_estimated_along_its_critical_path(store):
    source = "file:///data/inputs/source.mp4"
    transcode = {"renditions": [{"height": 240}]}
    for media_s in (2.0, 4.0):  # transcode: 1 s per job + 0.5 s per media second
        _learn(store.redis, "transcode", transcode, f"file:///other-{media_s}.mp4", {"input": {"duration": media_s}},
               1.0 + 0.5 * media_s)
    _learn(store.redis, "thumbnail", {"count": 3}, "file:///other.mp4", {"times": [1.0]}, 1.5)
    _learn(store.redis, "probe", {}, source, {"duration": 6.0}, 0.2)  # also: the source is 6 s long
    spec = wf.WorkflowSpec(input=source, steps=[
        wf.StepSpec(name="probe", kind="probe"),
        wf.StepSpec(name="transcode", kind="transcode", params=transcode, needs=["probe"]),
        wf.StepSpec(name="thumbs", kind="thumbnail", params={"count": 3}, needs=["probe"]),
    ])
    estimate = for_flow(store, wf.Flow.new(spec))
    assert estimate.steps["transcode"] == pytest.approx(4.0, rel=1e-3)  # 1 + 0.5 × 6
    assert estimate.steps["thumbs"] == pytest.approx(1.5, rel=1e-3)
    # probe → transcode is the longest chain, not probe → thumbs nor the sum of every step.
    assert estimate.estimated_duration_s == pytest.approx(4.2, rel=1e-3)
    assert estimate.estimated_remaining_s == pytest.approx(4.2, rel=1e-3)
