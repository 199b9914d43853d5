"""`renderfarm top --once` (the console script) against a real API, worker and beat:
it shows the pools, the queues with the one job waiting (no gpu-vision worker), the
worker, beat up, the dead-letter count after a failed job, and a throughput line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from renderfarm.core.apikeys import ALL_SCOPES, create_api_key
from tests.support.media import make_clip
from tests.support.procs import PYTHON, RedisServer, ServiceProcess, rf_env, start_api, start_worker, wait_for

RENDERFARM = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "renderfarm"
pytestmark = pytest.mark.timeout(120)


def test_top_once_shows_the_farm(tmp_path):
    redis_server = RedisServer(tmp_path / "redis").start()
    data_dir = tmp_path / "farm"
    env = rf_env(redis_server.url, data_dir)
    started = []
    try:
        api, base = start_api(env)
        started.append(api)
        started.append(start_worker(env, pool="cpu", name="cpu@top-test"))
        started.append(ServiceProcess([PYTHON, "-m", "renderfarm.worker.beat"], env, data_dir / "logs" / "beat.log")
                       .start())
        key = create_api_key(redis_server.client(), tenant="ops", scopes=ALL_SCOPES)
        headers = {"Authorization": f"Bearer {key}"}
        clip = make_clip(data_dir / "inputs" / "clip.mp4", duration=1, width=160, height=120)
        garbage = data_dir / "inputs" / "bad.mp4"
        garbage.write_bytes(b"not media" * 50)
        ids = [httpx.post(f"{base}/v1/jobs", headers=headers, json={"kind": "probe", "input": p.as_uri()}).json()["id"]
               for p in (clip, garbage)]
        httpx.post(f"{base}/v1/jobs", headers=headers, json={"kind": "vision", "input": clip.as_uri()})
        for job_id in ids:
            wait_for(lambda: httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers).json()["status"]
                     in ("succeeded", "failed"), 60, what="job finished")
        wait_for(lambda: httpx.get(f"{base}/v1/status", headers=headers).json()["beat"] == "up", 30, what="beat up")

        result = subprocess.run([str(RENDERFARM), "--api-url", base, "top", "--once", "--interval", "0.3"],
                                env={**os.environ, "RF_API_KEY": key, "COLUMNS": "200"},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        text = result.stdout
        assert "redis up" in text and "beat up" in text, text
        assert "waiting 1" in text and "dead-letter 1" in text, text
        assert "throughput" in text and "/s succeeded" in text, text
        lines = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
        assert lines["gpu-vision.normal"][1] == "1", text  # the waiting job, in its queue's DEPTH column
        assert "cpu" in lines and "cpu@top-test" in lines, text
    finally:
        for proc in reversed(started):
            proc.stop()
        redis_server.stop()
