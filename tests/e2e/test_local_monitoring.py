"""`renderfarm local --monitoring`: the local farm with a real Prometheus and
Alertmanager, the farm's alert rules loaded, every farm process scraped, their URLs
printed, and everything stopped on Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from renderfarm.monitoring import alerts
from tests.support.monitoring import ALERTMANAGER, PROMETHEUS
from tests.support.procs import REPO_ROOT, free_port, rf_env, wait_for

RENDERFARM = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "renderfarm")
pytestmark = pytest.mark.timeout(180)


def _open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_local_monitoring_scrapes_the_farm_with_the_rules(tmp_path):
    if PROMETHEUS is None or ALERTMANAGER is None:
        pytest.fail("prometheus / prometheus-alertmanager missing: `make system-deps` installs them")
    data_dir = tmp_path / "farm"
    port, redis_port, prom_port, am_port = free_port(), free_port(), free_port(), free_port()
    env = rf_env(f"redis://127.0.0.1:{redis_port}/0", data_dir)
    env.pop("RF_REDIS_URL")
    log_path = tmp_path / "farm.log"
    proc = subprocess.Popen([RENDERFARM, "local", "--data-dir", str(data_dir), "--port", str(port),
                             "--redis-port", str(redis_port), "--pools", "cpu", "--monitoring",
                             "--prometheus-port", str(prom_port), "--alertmanager-port", str(am_port)],
                            env=env, cwd=REPO_ROOT, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    prometheus = f"http://127.0.0.1:{prom_port}"
    try:
        wait_for(lambda: httpx.get(f"{prometheus}/-/ready", timeout=1).status_code == 200, 60, what="prometheus")
        assert httpx.get(f"http://127.0.0.1:{am_port}/-/ready", timeout=2).status_code == 200

        rules = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} == {a.name for a in alerts.ALERTS}

        def all_up():
            targets = httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
            return {t["labels"]["job"] for t in targets if t["health"] == "up"} == {"api", "worker"}

        wait_for(all_up, 60, what="api and worker targets up", interval=0.5)
        wait_for(lambda: httpx.get(f"{prometheus}/api/v1/query",
                                   params={"query": 'renderfarm_worker_up{pool="cpu"}'}).json()["data"]["result"],
                 30, what="the worker's series")
        out = log_path.read_text()
        assert f"Prometheus   http://127.0.0.1:{prom_port}" in out and f"http://127.0.0.1:{am_port}" in out
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    assert not _open(prom_port) and not _open(am_port), "Prometheus or Alertmanager outlived the farm"
