"""Live monitoring: a real Prometheus scrapes a running farm (Redis, API, a CPU
worker, beat) and the real operator (kopf, out of the cluster as its least-privilege
ServiceAccount, against the local Kubernetes API: WorkerPools for the cpu and
gpu-vision pools and their Deployments, whose pods land on kwok nodes), with the
generated rules loaded, and a real Alertmanager routes to a webhook receiver in
the test. No real node is needed: the operator only talks to the API server.

- Every query of every generated dashboard panel returns data through Prometheus's
  HTTP API, read out of the dashboard JSON (a panel naming a missing series fails),
  the operator's panels included.
- Faults: a burst of jobs, failing jobs, a paused queue, a pool without workers, and
  a worker process stopped while its pool then gets backlog.
- The alerts the scenario causes (jobs waiting with no worker of their pool: the
  pool that never had one and the one whose worker stopped; a kind failing; the
  dead-letter list growing) reach the receiver and Alertmanager's API; no other
  alert fires, nor does one for a pool whose only waiting job sits in a paused queue.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from renderfarm.core.apikeys import ALL_SCOPES, create_api_key
from renderfarm.core.queues import pool_queues
from renderfarm.monitoring import alerts
from renderfarm.monitoring.generate import CHART_DASHBOARDS, rules_yaml
from renderfarm.monitoring.dashboards import panel_queries
from tests.support.media import make_clip
from tests.support.monitoring import (ALERTMANAGER, PROMETHEUS, AlertReceiver, query, start_alertmanager,
                                      start_prometheus)
from tests.k8s.operator_fixtures import farm, worker_deployment, worker_pool, workerpool_crd  # noqa: F401
from tests.support.procs import PYTHON, REPO_ROOT, ServiceProcess, free_port, rf_env, start_api, start_worker, wait_for

pytestmark = pytest.mark.timeout(300)

# Alerts this scenario fires, with `for` shortened so the test need not wait minutes.
EXPECTED = {"RenderfarmNoWorkersForBacklog", "RenderfarmFailureRateHigh", "RenderfarmDeadLetterGrowing"}
SHORT_FOR = {name: "3s" for name in EXPECTED}
# The operator serves these pools (no WorkerPool for gpu-transcribe: its only job waits
# in a paused queue on purpose, and its pool is left alone).
OPERATED_POOLS = ("cpu", "gpu-vision")
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
def monitored_farm(farm, tmp_path: Path):  # noqa: F811 - the operator fixture
    if PROMETHEUS is None or ALERTMANAGER is None:
        pytest.fail("prometheus / prometheus-alertmanager missing: `make system-deps` installs them")
    data_dir = tmp_path / "farm"
    worker_metrics = free_port()
    env = rf_env(farm.redis_url, data_dir, RF_WORKER_METRICS_PORT=str(worker_metrics))
    started: list = []
    receiver = AlertReceiver()
    try:
        for pool in OPERATED_POOLS:
            farm.apply(worker_deployment(f"worker-{pool}"))
            farm.apply(worker_pool(pool, f"worker-{pool}", pool_queues(pool), maxReplicas=3,
                                   target={"backlogPerReplica": 1}))
        operator = farm.start_operator()  # waits until it leads
        api, base = start_api(env)
        started.append(api)
        worker = start_worker(env, pool="cpu")
        started.append(worker)
        started.append(ServiceProcess([PYTHON, "-m", "renderfarm.worker.beat"], env, data_dir / "logs" / "beat.log")
                       .start())
        alertmanager, am_base = start_alertmanager(tmp_path / "alertmanager", receiver.url)
        started.append(alertmanager)
        prometheus, prom_base = start_prometheus(
            tmp_path / "prometheus",
            {"api": [base.removeprefix("http://")], "worker": [f"127.0.0.1:{worker_metrics}"],
             "operator": [f"127.0.0.1:{operator.metrics_port}"]},
            rules_yaml(SHORT_FOR), am_base)
        started.append(prometheus)
        key = create_api_key(farm.redis(), tenant="ops", scopes=ALL_SCOPES)
        yield {"base": base, "headers": {"Authorization": f"Bearer {key}"}, "data_dir": data_dir,
               "prometheus": prom_base, "alertmanager": am_base, "receiver": receiver, "worker": worker,
               "operator_logs": farm.operator_logs}
    finally:
        for proc in reversed(started):
            proc.stop()
        for proc in farm.operators:
            proc.stop()
        receiver.close()


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

    # Every dashboard query returns data, read from the generated JSON: the operator's too.
    queries = _dashboard_queries()
    assert len(queries) >= 30, "the dashboards lost their queries"
    deadline = time.monotonic() + 60
    while True:
        empty = [(d, t, e) for d, t, e in queries if not query(farm["prometheus"], e)]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert empty == [], ("dashboard queries without data:\n" + "\n".join(f"{d} / {t}: {e}" for d, t, e in empty)
                         + "\n--- operator log (tail):\n" + farm["operator_logs"]()[-3000:])

    # A stopped worker: the cpu pool's only worker process goes away (warm shutdown),
    # then its pool gets a job; nothing takes it.
    farm["worker"].stop()
    orphaned = _submit(farm, "probe", clip)

    # The expected alerts reach the webhook receiver and Alertmanager's API.
    receiver = farm["receiver"]
    wait_for(lambda: EXPECTED <= receiver.names() and {"cpu", "gpu-vision"} <= {
                 a["labels"].get("pool") for a in receiver.alerts
                 if a["labels"]["alertname"] == "RenderfarmNoWorkersForBacklog"},
             90, what=f"alerts {sorted(EXPECTED)} (no workers: cpu and gpu-vision) at the receiver", interval=0.5)
    at_manager = httpx.get(f"{farm['alertmanager']}/api/v2/alerts").json()
    assert EXPECTED <= {a["labels"]["alertname"] for a in at_manager}
    no_workers = [a for a in receiver.alerts if a["labels"]["alertname"] == "RenderfarmNoWorkersForBacklog"]
    assert {a["labels"]["pool"] for a in no_workers} == {"gpu-vision", "cpu"}
    assert _status(farm, orphaned) == "queued"
    failing = [a for a in receiver.alerts if a["labels"]["alertname"] == "RenderfarmFailureRateHigh"]
    assert {a["labels"]["kind"] for a in failing} == {"probe"}
    assert all(a["annotations"]["runbook_url"].endswith("#" + a["labels"]["alertname"].lower())
               for a in receiver.alerts)

    # The others stay silent: nothing else fires in Prometheus. Rules with a `for` of
    # 10 minutes or more may be pending meanwhile (the operator's pools grow and shrink
    # with this burst), which is what `for` is there for; none may fire.
    rules = httpx.get(f"{farm['prometheus']}/api/v1/alerts").json()["data"]["alerts"]
    firing = {a["labels"]["alertname"] for a in rules if a["state"] == "firing"}
    pending = {a["labels"]["alertname"] for a in rules if a["state"] == "pending"}
    assert firing == EXPECTED, f"unexpected alerts: {sorted(firing - EXPECTED)}"
    assert not (pending - EXPECTED) & {a.name for a in alerts.ALERTS if a.for_ in ("0m", "2m", "5m")}, pending
    assert receiver.names() == EXPECTED
    assert {a.name for a in alerts.ALERTS} > EXPECTED
