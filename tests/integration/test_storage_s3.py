"""Media in object storage, end to end: a real S3 server (SeaweedFS, started by the
session), a real API process, real Celery workers, real ffmpeg.

s3:// inputs, outputs in the bucket with presigned URLs whose bytes match the
checksum, presigned uploads, the allow-list, clear errors for wrong credentials
and a missing bucket, cancel mid-upload, expiry."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path

import httpx
import pytest

from renderfarm.core.apikeys import Scope, create_api_key
from renderfarm.core.jobs import JobStatus
from renderfarm.core.redis_conn import redis_client as make_redis
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobStore
from tests.support.chunked import FPS, SHOT_FRAMES, SHOTS, make_source
from tests.support.quality import frame_psnrs
from tests.support.jobs import TERMINAL, start_beat, submit, wait_status
from tests.support.media import ffprobe, make_clip, stream
from tests.support.procs import ServiceProcess, start_api, start_worker, wait_for

BUCKET, INPUTS, PRIVATE = "rf-media", "rf-inputs", "rf-private"


@pytest.fixture
def s3(s3_server):
    client = s3_server.client()
    yield client
    for bucket in (BUCKET, INPUTS, PRIVATE):  # each test starts with empty buckets
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        for upload in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])


@pytest.fixture
def s3_env(rf_settings_env, s3_server, monkeypatch):
    env = dict(rf_settings_env, **s3_server.env(BUCKET, RF_S3_ALLOWED_INPUT_BUCKETS=INPUTS,
                                                RF_S3_PART_SIZE_BYTES=str(5 * 1024**2)))
    for key, value in env.items():
        if key.startswith("RF_"):
            monkeypatch.setenv(key, value)
    from renderfarm.core.storage.config import get_storage_settings

    get_storage_settings.cache_clear()
    yield env
    get_storage_settings.cache_clear()


@pytest.fixture
def procs():
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop(signal.SIGKILL, 5)


@pytest.fixture
def api(s3_env, procs):
    proc, base = start_api(s3_env)
    procs.append(proc)
    return base


@pytest.fixture
def store(s3_env):
    settings = Settings()
    return JobStore(make_redis(settings, socket_timeout_s=5), retention_seconds=settings.retention_seconds)


def headers(redis_client, tenant: str = "media-team") -> dict[str, str]:
    return {"Authorization": f"Bearer {create_api_key(redis_client, tenant, frozenset({Scope.jobs}))}"}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def put_clip(s3, tmp_path: Path, bucket: str, key: str, **clip) -> Path:
    path = make_clip(tmp_path / "upload" / Path(key).name, **clip)
    s3.upload_file(str(path), bucket, key)
    return path


def wait_job(base: str, auth: dict, job_id: str, timeout: float = 90) -> dict:
    return wait_for(lambda: (job := httpx.get(f"{base}/v1/jobs/{job_id}", headers=auth).json())["status"]
                    in {s.value for s in TERMINAL} and job, timeout, what=f"job {job_id} to finish")


def test_s3_input_outputs_in_bucket_and_presigned_urls_serve_the_same_bytes(api, s3, s3_env, procs, redis_client,
                                                                             tmp_path):
    procs.append(start_worker(s3_env))
    put_clip(s3, tmp_path, INPUTS, "clips/in.mp4", duration=2)
    auth = headers(redis_client)
    answer = httpx.post(f"{api}/v1/jobs", headers=auth, json={
        "kind": "transcode", "input": f"s3://{INPUTS}/clips/in.mp4",
        "params": {"renditions": [{"height": 120}, {"height": 180}]}})
    assert answer.status_code == 202, answer.text
    job = wait_job(api, auth, answer.json()["id"])
    assert job["status"] == "succeeded", job["error"]

    outputs = {o["name"]: o for o in job["result"]["outputs"]}
    assert sorted(outputs) == ["120p.mp4", "180p.mp4"]
    for name, output in outputs.items():
        key = f"renderfarm/media-team/{job['id']}/{name}"
        assert output["uri"] == f"s3://{BUCKET}/{key}"
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentLength"] == output["size_bytes"] and output["media_type"] == "video/mp4"
        assert head["Metadata"]["sha256"] == output["checksum"]
        assert output["url"] and output["expires_at"]
        # The presigned URL needs no credentials and serves exactly the bytes described.
        body = httpx.get(output["url"], timeout=30).content
        assert len(body) == output["size_bytes"] and sha256(body) == output["checksum"]
        local = tmp_path / name
        local.write_bytes(body)
        video = stream(ffprobe(local), "video")
        assert video["codec_name"] == "h264" and int(video["height"]) == int(name.split("p")[0])
        # The redirect route signs a fresh URL to the same object.
        redirect = httpx.get(f"{api}/v1/jobs/{job['id']}/outputs/{name}", headers=auth)
        assert redirect.status_code == 307, redirect.text
        assert sha256(httpx.get(redirect.headers["location"], timeout=30).content) == output["checksum"]
    # The listing signs them too.
    [listed] = [j for j in httpx.get(f"{api}/v1/jobs", headers=auth).json()["jobs"] if j["id"] == job["id"]]
    assert all(o["url"] and o["expires_at"] for o in listed["result"]["outputs"])
    # The job record itself holds no signature (signed per read, never stored).
    assert "X-Amz-Signature" not in redis_client.hget(f"rf:job:{job['id']}", "result")
    # Another tenant cannot reach the outputs.
    assert httpx.get(f"{api}/v1/jobs/{job['id']}/outputs/120p.mp4",
                     headers=headers(redis_client, "other")).status_code == 404


def test_presigned_put_upload_then_a_job_on_it(api, s3_env, procs, redis_client, tmp_path, s3):
    procs.append(start_worker(s3_env))
    auth = headers(redis_client)
    target = httpx.post(f"{api}/v1/uploads", headers=auth, json={"filename": "my clip.mp4", "media_type": "video/mp4"})
    assert target.status_code == 201, target.text
    upload = target.json()
    assert upload["uri"].startswith(f"s3://{BUCKET}/renderfarm/media-team/uploads/")
    clip = make_clip(tmp_path / "clip.mp4", duration=1.5)
    put = httpx.put(upload["url"], content=clip.read_bytes(), headers=upload["headers"], timeout=30)
    assert put.status_code == 200, put.text

    answer = httpx.post(f"{api}/v1/jobs", headers=auth, json={"kind": "probe", "input": upload["uri"]})
    assert answer.status_code == 202, answer.text
    job = wait_job(api, auth, answer.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert abs(job["result"]["metadata"]["duration"] - 1.5) < 0.1
    # An upload key belongs to its tenant: another tenant's submit with it is refused.
    other = httpx.post(f"{api}/v1/jobs", headers=headers(redis_client, "other"),
                       json={"kind": "probe", "input": upload["uri"]})
    assert other.status_code == 422, other.text


def test_inputs_outside_the_allow_list_or_missing_are_422(api, s3, redis_client, tmp_path):
    auth = headers(redis_client)
    put_clip(s3, tmp_path, PRIVATE, "secret.mp4", duration=1)
    cases = {
        f"s3://{PRIVATE}/secret.mp4": "not an allowed input bucket",
        f"s3://{INPUTS}/nothing-here.mp4": "does not exist",
        f"s3://{BUCKET}/renderfarm/another-team/x/out.mp4": "must lie under renderfarm/media-team/",
        "s3://no-such-bucket-rf/x.mp4": "not an allowed input bucket",
    }
    for uri, expected in cases.items():
        answer = httpx.post(f"{api}/v1/jobs", headers=auth, json={"kind": "probe", "input": uri})
        assert answer.status_code == 422, (uri, answer.text)
        assert expected in answer.json()["error"]["message"], (uri, answer.text)


def test_object_gone_after_submit_fails_invalid_media(store, s3_env, procs):
    procs.append(start_worker(s3_env))
    job = submit(store, "probe", f"s3://{INPUTS}/vanished.mp4")  # straight into the store: no submit check
    done = wait_status(store, job.id, TERMINAL)
    assert done.status == JobStatus.failed
    assert done.error.type == "invalid_media" and "does not exist" in done.error.message


def test_wrong_credentials_and_a_missing_bucket_fail_with_a_clear_error(store, s3_env, procs, data_dir, s3):
    clip = make_clip(data_dir / "inputs" / "clip.mp4", duration=1)
    bad_secret = dict(s3_env, RF_S3_SECRET_ACCESS_KEY="not-the-secret")
    no_bucket = dict(s3_env, RF_S3_BUCKET="rf-missing-bucket")
    for env, words in ((bad_secret, ("denied", "check the S3 credentials")), (no_bucket, ("rf-missing-bucket", "does not exist"))):
        worker = start_worker(env)
        procs.append(worker)
        job = submit(store, "thumbnail", clip, {"count": 1})
        done = wait_status(store, job.id, TERMINAL)
        worker.stop(signal.SIGKILL, 5)
        assert done.status == JobStatus.failed, done
        assert done.error.type == "storage" and not done.error.retryable
        for word in words:
            assert word in done.error.message, done.error.message
        # The secret itself never shows up in what the job or the worker log say.
        assert "not-the-secret" not in done.model_dump_json() and "not-the-secret" not in worker.log()
    assert not s3.list_objects_v2(Bucket=BUCKET).get("Contents")


def test_cancel_mid_upload_leaves_no_object_and_no_multipart_upload(api, s3, s3_env, procs, redis_client, tmp_path):
    procs.append(start_worker(s3_env))
    # 20 minutes of 48 kHz stereo WAV: ~230 MB, ~44 parts of 5 MiB.
    put_clip(s3, tmp_path, INPUTS, "long-audio.mp4", duration=1200, video=False)
    auth = headers(redis_client)
    answer = httpx.post(f"{api}/v1/jobs", headers=auth, json={
        "kind": "extract_audio", "input": f"s3://{INPUTS}/long-audio.mp4",
        "params": {"sample_rate": 48000, "channels": 2}})
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    prefix = f"renderfarm/media-team/{job_id}/"
    wait_for(lambda: s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads"), 120,
             what="the output's multipart upload to start", interval=0.02)
    cancel = httpx.post(f"{api}/v1/jobs/{job_id}/cancel", headers=auth)
    assert cancel.status_code == 202, cancel.text
    job = wait_job(api, auth, job_id)
    assert job["status"] == "cancelled"
    wait_for(lambda: not s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get("Uploads"), 30,
             what="the multipart upload to be aborted")
    assert not s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents")


def test_expiry_removes_the_outputs(s3_env, procs, data_dir, s3):
    env = dict(s3_env, RF_RETENTION_SECONDS="3", RF_MAINTENANCE_INTERVAL_S="1")
    settings = Settings(retention_seconds=3)
    store = JobStore(make_redis(settings, socket_timeout_s=5), retention_seconds=3)
    procs.append(start_worker(env))
    clip = make_clip(data_dir / "inputs" / "clip.mp4", duration=1)
    job = submit(store, "thumbnail", clip, {"count": 2})
    done = wait_status(store, job.id, TERMINAL)
    assert done.status == JobStatus.succeeded, done.error
    prefix = f"renderfarm/default/{job.id}/"
    assert len(s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]) == 2
    # An upload in the tenant's prefix is not a job's output: the sweep leaves it.
    s3.put_object(Bucket=BUCKET, Key="renderfarm/default/uploads/u1/keep.mp4", Body=b"x")
    procs.append(start_beat(env))
    wait_for(lambda: store.status_of(job.id) is None, 30, what="the job record to expire")
    wait_for(lambda: not s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents"), 30,
             what="the outputs to be removed")
    assert s3.head_object(Bucket=BUCKET, Key="renderfarm/default/uploads/u1/keep.mp4")["ContentLength"] == 1


def test_the_expiry_sweep_covers_the_bucket_a_few_folders_per_pass(s3_env, s3):
    from renderfarm.core.storage.config import get_storage_settings
    from renderfarm.core.storage.retention import OutputSweeper

    live = {"job-live"}
    for tenant in ("a", "b"):
        for job_id in ("job-1", "job-2", "job-live"):
            s3.put_object(Bucket=BUCKET, Key=f"renderfarm/{tenant}/{job_id}/out.mp4", Body=b"x")
    s3.put_object(Bucket=BUCKET, Key="renderfarm/a/uploads/u/in.mp4", Body=b"x")
    sweeper = OutputSweeper(lambda job_id: job_id in live, get_storage_settings(), per_pass=2)
    removed = [sweeper.run_pass() for _ in range(4)]
    assert removed[0] == 2 and sum(removed) == 4, removed  # two folders looked at per pass, resumed each time
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
    assert keys == ["renderfarm/a/job-live/out.mp4", "renderfarm/a/uploads/u/in.mp4", "renderfarm/b/job-live/out.mp4"]


def test_a_retried_job_overwrites_the_same_keys(store, s3_env, procs, data_dir, s3):
    from renderfarm.worker.beat import recover_orphans

    env = dict(s3_env, RF_ORPHAN_AFTER_S="1")
    clip = make_clip(data_dir / "inputs" / "two.mp4", duration=20, width=640, height=360)
    doomed = start_worker(env)
    procs.append(doomed)
    job = submit(store, "transcode", clip, {"renditions": [{"height": 144, "preset": "ultrafast"},
                                                         {"height": 360, "preset": "slow"}]})
    first_key = f"renderfarm/default/{job.id}/144p.mp4"
    # The first rendition is in the bucket; the run dies while making the second.
    wait_for(lambda: s3.list_objects_v2(Bucket=BUCKET, Prefix=first_key).get("Contents"), 120,
             what="the first output to be uploaded", interval=0.1)
    first_written = s3.head_object(Bucket=BUCKET, Key=first_key)["LastModified"]
    doomed.kill()
    wait_for(lambda: recover_orphans(store, Settings(orphan_after_s=1)) == [job.id], 20, interval=0.5,
             what="orphan recovery")
    procs.append(start_worker(env))
    final = wait_status(store, job.id, TERMINAL, timeout=180)
    assert final.status == JobStatus.succeeded and final.attempts == 2, final.error
    keys = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"renderfarm/default/{job.id}/")["Contents"])
    assert keys == [first_key, f"renderfarm/default/{job.id}/360p.mp4"]  # the same keys, nothing beside them
    # Rewritten by the second attempt (the same bytes: x264 is deterministic, so is the ETag).
    assert s3.head_object(Bucket=BUCKET, Key=first_key)["LastModified"] > first_written
    for output in final.result.outputs:
        head = s3.head_object(Bucket=BUCKET, Key=output.uri.removeprefix(f"s3://{BUCKET}/"))
        assert head["ContentLength"] == output.size_bytes and head["Metadata"]["sha256"] == output.checksum
    assert not s3.list_multipart_uploads(Bucket=BUCKET, Prefix=f"renderfarm/default/{job.id}/").get("Uploads")


def test_a_chunked_transcode_workflow_runs_on_the_bucket_alone(api, s3, s3_env, procs, redis_client, tmp_path):
    """Every hop of a workflow goes through the bucket: the split reads an s3:// input,
    the chunks, the encoded chunks and the audio are objects under the tenant's prefix,
    and the concat's output plays with every frame."""
    procs.append(start_worker(s3_env, concurrency=2))
    source = make_source(tmp_path / "upload" / "long.mp4")  # 20 s of five moving shots, 2 s GOP
    s3.upload_file(str(source), INPUTS, "clips/long.mp4")
    auth = headers(redis_client)
    answer = httpx.post(f"{api}/v1/jobs", headers=auth, json={
        "kind": "transcode", "input": f"s3://{INPUTS}/clips/long.mp4",
        "params": {"renditions": [{"height": 120}], "chunking": {"chunk_duration_s": 4}}})
    assert answer.status_code == 202 and answer.json()["template"] == "chunked-transcode", answer.text
    flow = wait_for(lambda: (f := httpx.get(f"{api}/v1/workflows/{answer.json()['id']}", headers=auth).json())[
        "status"] in ("succeeded", "failed", "cancelled") and f, 120, what="the chunked workflow")
    steps = {step["name"]: step for step in flow["steps"]}
    failed = {name: httpx.get(f"{api}/v1/jobs/{step['job_id']}", headers=auth).json().get("error") or step.get("error")
              for name, step in steps.items() if step["status"] != "succeeded"}
    assert flow["status"] == "succeeded", failed
    assert len([n for n in steps if ".chunk-" in n]) >= 2 and "concat-0.audio" in steps
    prefix = f"s3://{BUCKET}/renderfarm/media-team/"
    assert all(uri.startswith(prefix) for step in steps.values() for uri in step["outputs"].values()), steps
    concat = wait_job(api, auth, steps["concat-0"]["job_id"])
    [output] = concat["result"]["outputs"]
    body = httpx.get(output["url"], timeout=30).content
    assert sha256(body) == output["checksum"]
    local = tmp_path / "joined.mp4"
    local.write_bytes(body)
    info = ffprobe(local)
    assert stream(info, "video")["height"] == 120 and stream(info, "audio")["codec_name"] == "aac"
    assert float(info["format"]["duration"]) == pytest.approx(SHOTS * SHOT_FRAMES / FPS, abs=0.1)
    assert int(stream(info, "video")["nb_frames"]) == SHOTS * SHOT_FRAMES
    # Each chunk in its place: every frame matches its own source frame (five copies of
    # one chunk, all "encoded.mkv", would have the right count and length too).
    assert min(frame_psnrs(local, source, tmp_path)) >= 20
