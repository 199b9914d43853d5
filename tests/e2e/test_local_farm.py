"""End to end: the farm started as `make run` starts it, driven over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.media import ffprobe, make_clip, stream
from tests.support.procs import REPO_ROOT, free_port, rf_env, wait_for

RENDERFARM = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "renderfarm")


@pytest.fixture
def farm(tmp_path):
    data_dir = tmp_path / "farm"
    port, redis_port = free_port(), free_port()
    env = rf_env(f"redis://127.0.0.1:{redis_port}/0", data_dir)
    env.pop("RF_REDIS_URL")  # let the runner start its own Redis, as `make run` does
    log = open(tmp_path / "farm.log", "wb")
    proc = subprocess.Popen([RENDERFARM, "local", "--data-dir", str(data_dir), "--port", str(port),
                             "--redis-port", str(redis_port), "--pools", "cpu"],
                            env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=1).status_code == 200, 60, what="farm API")
        key = wait_for(lambda: (data_dir / ".api-key").read_text().strip(), 10, what="API key file")
        headers = {"Authorization": f"Bearer {key}"}
        wait_for(lambda: httpx.get(f"{base}/v1/status", headers=headers).json()["pools"]["cpu"] >= 1, 60,
                 what="cpu worker")
        yield {"base": base, "headers": headers, "data_dir": data_dir, "proc": proc, "log": tmp_path / "farm.log",
               "redis_port": redis_port}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                import os

                os.killpg(proc.pid, signal.SIGKILL)


def test_make_run_stack_transcodes_over_http_and_stops_cleanly(farm):
    base, headers, data_dir = farm["base"], farm["headers"], farm["data_dir"]
    clip = make_clip(data_dir / "inputs" / "e2e.mp4", duration=3, width=640, height=360)
    body = {"kind": "transcode", "input": clip.as_uri(), "priority": "high",
            "params": {"renditions": [{"height": 240}, {"height": 144, "video_codec": "h264", "crf": 30}]}}
    response = httpx.post(f"{base}/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    # Follow the job over Server-Sent Events until it ends.
    events = []
    with httpx.stream("GET", f"{base}/v1/jobs/{job_id}/events", headers=headers, timeout=120) as stream_:
        assert stream_.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in stream_.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                events.append((event, json.loads(line[6:])))
    assert events[0][0] == "job" and events[-1][0] == "job"
    final = events[-1][1]
    assert final["status"] == "succeeded", final
    assert any(kind == "progress" and data["status"] == "running" for kind, data in events)

    job = httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers).json()
    outputs = {o["name"]: Path(o["uri"].removeprefix("file://")) for o in job["result"]["outputs"]}
    assert set(outputs) == {"240p.mp4", "144p.mp4"}
    for name, height in (("240p.mp4", 240), ("144p.mp4", 144)):
        info = ffprobe(outputs[name])
        video = stream(info, "video")
        assert video["codec_name"] == "h264"
        assert int(video["height"]) == height and int(video["width"]) == round(height * 16 / 9 / 2) * 2
        assert stream(info, "audio")["codec_name"] == "aac"
        assert abs(float(info["format"]["duration"]) - 3.0) <= 0.1
        assert outputs[name].stat().st_size == next(o["size_bytes"] for o in job["result"]["outputs"] if o["name"] == name)

    listed = httpx.get(f"{base}/v1/jobs", params={"status": "succeeded"}, headers=headers).json()["jobs"]
    assert [j["id"] for j in listed] == [job_id]
    metrics = httpx.get(f"{base}/metrics").text
    assert 'renderfarm_job_outcomes_total{error_type="none",kind="transcode",queue="cpu.high",status="succeeded"} 1.0' in metrics
    assert 'renderfarm_job_submissions_total{kind="transcode",priority="high"} 1.0' in metrics

    # Ctrl-C stops every process the runner started.
    proc = farm["proc"]
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 4  # redis, api, worker (+ its pool), beat
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    time.sleep(0.5)
    assert [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE] == []
    assert "stopped." in farm["log"].read_text()


def test_make_run_redis_fsyncs_every_write_and_its_key_does_everything(farm, tmp_path):
    """A 202 is durable: the Redis `make run` starts writes every command to its
    append-only file before answering; and the printed key works for jobs and admin."""
    import redis

    base, headers, data_dir = farm["base"], farm["headers"], farm["data_dir"]
    client = redis.Redis(port=farm["redis_port"], decode_responses=True)
    config = client.config_get("append*")
    assert config["appendonly"] == "yes" and config["appendfsync"] == "always", config

    clip = make_clip(data_dir / "inputs" / "durable.mp4", duration=1)
    assert httpx.post(f"{base}/v1/queues/cpu.low/pause", headers=headers).json()["paused"] is True
    job = httpx.post(f"{base}/v1/jobs", headers=headers,
                     json={"kind": "probe", "input": clip.as_uri(), "priority": "low"}).json()
    assert job["status"] == "queued" and job["tenant"] == "local"
    assert httpx.get(f"{base}/v1/workers", headers=headers).status_code == 200
    assert httpx.get(f"{base}/v1/stats", headers=headers).status_code == 200
    # The job's record is in the AOF the moment the 202 came back.
    aof = b"".join(p.read_bytes() for p in (data_dir / "redis").rglob("*.aof*") if p.is_file())
    assert job["id"].encode() in aof
    assert httpx.post(f"{base}/v1/queues/cpu.low/resume", headers=headers).status_code == 200
