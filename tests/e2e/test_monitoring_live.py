"""Live monitoring: a real Prometheus scrapes a running farm (Redis, API, a CPU
worker, beat) with the generated rules loaded, and a real Alertmanager routes to a
webhook receiver in the test.

- Every query of every generated dashboard panel returns data through Prometheus's
  HTTP API, read out of the dashboard JSON (a panel naming a missing series fails),
  except the operator's series: no operator runs here (listed in OPERATOR_SERIES).
- The alerts the scenario causes (jobs waiting with no worker of their pool, a kind
  failing, the dead-letter list growing) reach the receiver and Alertmanager's API;
  the others do not, nor does a pool whose only waiting job sits in a paused queue.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest

from renderfarm.core.apikeys import ALL_SCOPES, create_api_key
from renderfarm.monitoring import alerts
from renderfarm.monitoring.generate import CHART_DASHBOARDS, rules_yaml
from renderfarm.monitoring.dashboards import panel_queries
from tests.support.media import make_clip
from tests.support.monitoring import (ALERTMANAGER, PROMETHEUS, AlertReceiver, query, start_alertmanager,
                                      start_prometheus)
from tests.support.procs import (PYTHON, REPO_ROOT, RedisServer, ServiceProcess, free_port, rf_env, start_api,
                                 start_worker, wait_for)

pytestmark = pytest.mark.timeout(240)

# Alerts this scenario fires, with `for` shortened so the test need not wait minutes.
EXPECTED = {"RenderfarmNoWorkersForBacklog", "RenderfarmFailureRateHigh", "RenderfarmDeadLetterGrowing"}
SHORT_FOR = {name: "3s" for name in EXPECTED}
# Only the operator exports these (it needs Kubernetes); tests/k8s covers the operator's metrics.
OPERATOR_SERIES = re.compile(r"renderfarm_(pool_|scaling_|operator_)")
VARIABLES = {"$namespace": ".*", "$pool": ".*", "$kind": ".*", "$__rate_interval": "5m"}


def _dashboard_queries() -> list[tuple[str, str, str]]:
    out = []
    for path in sorted((REPO_ROOT / CHART_DASHBOARDS).glob("*.json")):
        for title, expr in panel_queries(json.loads(path.read_text())):
            for name, value in VARIABLES.items():
                expr = expr.replace(name, value)
            out.append((path.stem, title, expr))
    return out


@pytest.fixture
def monitored_farm(tmp_path: Path):
    if PROMETHEUS is None or ALERTMANAGER is None:
        pytest.fail("prometheus / prometheus-alertmanager missing: `make system-deps` installs them")
    redis_server = RedisServer(tmp_path / "redis").start()
    data_dir = tmp_path / "farm"
    worker_metrics = free_port()
    env = rf_env(redis_server.url, data_dir, RF_WORKER_METRICS_PORT=str(worker_metrics))
    started: list = []
    receiver = AlertReceiver()
    try:
        api, base = start_api(env)
        started.append(api)
        started.append(start_worker(env, pool="cpu"))
        started.append(ServiceProcess([PYTHON, "-m", "renderfarm.worker.beat"], env, data_dir / "logs" / "beat.log")
                       .start())
        alertmanager, am_base = start_alertmanager(tmp_path / "alertmanager", receiver.url)
        started.append(alertmanager)
        prometheus, prom_base = start_prometheus(
            tmp_path / "prometheus",
            {"api": [base.removeprefix("http://")], "worker": [f"127.0.0.1:{worker_metrics}"]},
            rules_yaml(SHORT_FOR), am_base)
        started.append(prometheus)
        key = create_api_key(redis_server.client(), tenant="ops", scopes=ALL_SCOPES)
        yield {"base": base, "headers": {"Authorization": f"Bearer {key}"}, "data_dir": data_dir,
               "prometheus": prom_base, "alertmanager": am_base, "receiver": receiver}
    finally:
        for proc in reversed(started):
            proc.stop()
        receiver.close()
        redis_server.stop()


def _submit(farm, kind: str, input_path: Path, priority: str = "normal", params: dict | None = None) -> str:
    response = httpx.post(f"{farm['base']}/v1/jobs", headers=farm["headers"],
                          json={"kind": kind, "input": input_path.as_uri(), "priority": priority,
                                "params": params or {}})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _status(farm, job_id: str) -> str:
    return httpx.get(f"{farm['base']}/v1/jobs/{job_id}", headers=farm["headers"]).json()["status"]


def test_dashboards_have_data_and_expected_alerts_reach_alertmanager(monitored_farm):
    farm = monitored_farm
    inputs = farm["data_dir"] / "inputs"
    clip = make_clip(inputs / "clip.mp4", duration=1, width=160, height=120)
    garbage = inputs / "not-media.mp4"
    garbage.write_bytes(b"this is not a video" * 100)

    # Let Prometheus see the outcome counters at 0 first, so the failures below are a rate.
    wait_for(lambda: query(farm["prometheus"], 'renderfarm_job_outcomes_total{kind="probe",status="failed"}'),
             30, what="outcome series scraped")
    ok = [_submit(farm, "probe", clip) for _ in range(2)]
    bad = [_submit(farm, "probe", garbage) for _ in range(2)]
    waiting = _submit(farm, "vision", clip)  # no gpu-vision worker: it waits
    # A paused queue with a waiting job and no worker is on purpose: no alert for its pool.
    paused = httpx.post(f"{farm['base']}/v1/queues/gpu-transcribe.normal/pause", headers=farm["headers"])
    assert paused.status_code == 200, paused.text
    held = _submit(farm, "transcribe", clip)
    for job_id in ok + bad:
        wait_for(lambda: _status(farm, job_id) in ("succeeded", "failed"), 60, what=f"job {job_id} finished")
    assert [_status(farm, j) for j in ok] == ["succeeded"] * 2
    assert [_status(farm, j) for j in bad] == ["failed"] * 2
    assert _status(farm, waiting) == "queued" and _status(farm, held) == "queued"

    # Every dashboard query returns data, read from the generated JSON.
    queries = _dashboard_queries()
    live = [(d, t, e) for d, t, e in queries if not OPERATOR_SERIES.search(e)]
    assert len(live) >= 20, "the dashboards lost their queries"
    deadline = time.monotonic() + 45
    while True:
        empty = [(d, t, e) for d, t, e in live if not query(farm["prometheus"], e)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert empty == [], "dashboard queries without data:\n" + "\n".join(f"{d} / {t}: {e}" for d, t, e in empty)

    # The expected alerts reach the webhook receiver and Alertmanager's API.
    receiver = farm["receiver"]
    wait_for(lambda: EXPECTED <= receiver.names(), 90, what=f"alerts {sorted(EXPECTED)} at the receiver",
             interval=0.5)
    at_manager = httpx.get(f"{farm['alertmanager']}/api/v2/alerts").json()
    assert EXPECTED <= {a["labels"]["alertname"] for a in at_manager}
    no_workers = [a for a in receiver.alerts if a["labels"]["alertname"] == "RenderfarmNoWorkersForBacklog"]
    assert {a["labels"]["pool"] for a in no_workers} == {"gpu-vision"}
    failing = [a for a in receiver.alerts if a["labels"]["alertname"] == "RenderfarmFailureRateHigh"]
    assert {a["labels"]["kind"] for a in failing} == {"probe"}
    assert all(a["annotations"]["runbook_url"].endswith("#" + a["labels"]["alertname"].lower())
               for a in receiver.alerts)

    # The others stay silent: nothing else is pending or firing in Prometheus.
    active = {a["labels"]["alertname"] for a in
              httpx.get(f"{farm['prometheus']}/api/v1/alerts").json()["data"]["alerts"]}
    assert active == EXPECTED, f"unexpected alerts: {sorted(active - EXPECTED)}"
    assert receiver.names() == EXPECTED
    assert {a.name for a in alerts.ALERTS} > EXPECTED
