"""The workflow API against a real redis-server (no worker: steps stay queued).
Submit by template or DAG, 422s with field details, idempotency, tenancy, listing,
cancel and retry states, the template listing."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from renderfarm.api.app import create_app
from renderfarm.core.apikeys import Scope, create_api_key
from renderfarm.core.settings import Settings
from renderfarm.core.workflow_templates import TEMPLATES
from tests.support.media import make_clip

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
LADDER = {"renditions": [{"height": 120}, {"height": 240}]}


@pytest.fixture
def settings(redis_server, redis_client, data_dir):
    return Settings(redis_url=redis_server.url, data_dir=data_dir, api_keys=[KEY],
                    allowed_input_roots=[data_dir / "inputs"])


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def clip(data_dir):
    return make_clip(data_dir / "inputs" / "clip.mp4", duration=1)


def dag(clip, **extra):
    return {"input": clip.as_uri(), "steps": [
        {"name": "transcode", "kind": "transcode", "params": LADDER},
        {"name": "thumbs", "kind": "thumbnail", "needs": ["transcode"],
         "input": {"from": "transcode", "output": "240p.mp4"}},
    ]} | extra


def test_a_dag_starts_only_its_roots_as_ordinary_jobs_on_their_pools_queues(client, clip, redis_client):
    response = client.post("/v1/workflows", headers=AUTH, json=dag(clip, priority="high"))
    assert response.status_code == 202, response.text
    flow = response.json()
    assert response.headers["Location"] == f"/v1/workflows/{flow['id']}"
    assert flow["status"] == "running" and flow["progress"] == 0
    steps = {step["name"]: step for step in flow["steps"]}
    assert steps["transcode"]["status"] == "started" and steps["transcode"]["job_status"] == "queued"
    assert steps["thumbs"]["status"] == "pending" and steps["thumbs"]["job_id"] is None
    assert redis_client.llen("cpu.high") == 1  # the operator sees it as backlog of its pool
    job = client.get(f"/v1/jobs/{steps['transcode']['job_id']}", headers=AUTH).json()
    assert job["labels"] == {"workflow": flow["id"], "step": "transcode"} and job["queue"] == "cpu.high"
    assert client.get(f"/v1/workflows/{flow['id']}", headers=AUTH).json()["steps"] == flow["steps"]


def test_a_template_builds_its_steps_from_params(client, clip):
    response = client.post("/v1/workflows", headers=AUTH, json={
        "template": "publish", "input": clip.as_uri(), "params": {"heights": [120, 240], "thumbnails": 3}})
    assert response.status_code == 202, response.text
    flow = response.json()
    assert flow["template"] == "publish" and flow["failure_policy"] == "continue"
    steps = {step["name"]: step for step in flow["steps"]}
    assert steps["transcode"]["status"] == "started" and steps["thumbnails"]["needs"] == ["transcode"]


@pytest.mark.parametrize(("body", "field"), [
    ({"steps": [{"name": "a", "kind": "probe", "needs": ["b"]}, {"name": "b", "kind": "probe", "needs": ["a"]}]},
     "steps.0.needs"),
    ({"steps": [{"name": "a", "kind": "probe", "needs": ["nope"]}]}, "steps.0.needs.0"),
    ({"steps": [{"name": "a", "kind": "paint"}]}, "steps.0.kind"),
    ({"steps": [{"name": "a", "kind": "transcode", "params": LADDER},
                {"name": "b", "kind": "thumbnail", "input": {"from": "a", "output": "240p.mp4"}}]}, "steps.1.input.from"),
    ({"steps": [{"name": "a", "kind": "transcode", "params": LADDER},
                {"name": "b", "kind": "thumbnail", "needs": ["a"], "input": {"from": "a", "output": "4k.mp4"}}]},
     "steps.1.input.output"),
    ({"steps": [{"name": "a", "kind": "transcode", "params": {"renditions": [{"height": 121}]}}]},
     "steps.0.params.renditions.0"),
])
def test_dag_errors_are_422_with_field_details(client, clip, redis_client, body, field):
    response = client.post("/v1/workflows", headers=AUTH, json={"input": clip.as_uri()} | body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_workflow"
    assert field in {detail["field"] for detail in error["details"]}, error
    assert redis_client.llen("cpu.normal") == 0 and not redis_client.keys("rf:workflow:*")


def test_request_shape_errors_are_422_too(client, clip):
    both = client.post("/v1/workflows", headers=AUTH, json=dag(clip, template="publish"))
    assert both.status_code == 422 and both.json()["error"]["details"][0]["field"] == "template"
    bad_template = client.post("/v1/workflows", headers=AUTH, json={"template": "nope", "input": clip.as_uri()})
    assert bad_template.status_code == 422
    bad_params = client.post("/v1/workflows", headers=AUTH,
                             json={"template": "publish", "input": clip.as_uri(), "params": {"heights": [121]}})
    assert bad_params.status_code == 422 and bad_params.json()["error"]["details"][0]["field"].startswith("params.heights")
    outside = client.post("/v1/workflows", headers=AUTH, json=dag(clip, input="file:///etc/passwd"))
    assert outside.status_code == 422 and outside.json()["error"]["details"][0]["field"] == "input"


def test_idempotency_key_replays_and_refuses_another_body(client, clip, redis_client):
    headers = AUTH | {"Idempotency-Key": "wf-1"}
    first = client.post("/v1/workflows", headers=headers, json=dag(clip))
    again = client.post("/v1/workflows", headers=headers, json=dag(clip))
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"] and redis_client.llen("cpu.normal") == 1
    other = client.post("/v1/workflows", headers=headers, json=dag(clip, priority="low"))
    assert other.status_code == 409 and other.json()["error"]["details"]["workflow_id"] == first.json()["id"]


def test_another_tenants_workflow_is_a_404_and_listing_is_per_tenant(client, clip, redis_client):
    mine = client.post("/v1/workflows", headers=AUTH, json=dag(clip)).json()
    other = {"X-API-Key": create_api_key(redis_client, "bob", frozenset({Scope.jobs}))}
    for method, path in [("get", ""), ("post", "/cancel"), ("post", "/retry"), ("get", "/events")]:
        response = getattr(client, method)(f"/v1/workflows/{mine['id']}{path}", headers=other)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
    assert client.get("/v1/workflows", headers=other).json()["workflows"] == []


def test_listing_filters_and_pages_with_a_cursor(client, clip):
    ids = [client.post("/v1/workflows", headers=AUTH, json=dag(clip)).json()["id"] for _ in range(3)]
    # Beat's expiry pass over the job indexes leaves the workflow indexes alone.
    client.app.state.store.purge_expired_index_entries()
    client.post(f"/v1/workflows/{ids[0]}/cancel", headers=AUTH)
    first = client.get("/v1/workflows?limit=2", headers=AUTH).json()
    second = client.get(f"/v1/workflows?limit=2&cursor={first['next_cursor']}", headers=AUTH).json()
    assert [w["id"] for w in first["workflows"] + second["workflows"]] == ids[::-1]
    assert second["next_cursor"] is None
    cancelled = client.get("/v1/workflows?status=cancelled", headers=AUTH).json()["workflows"]
    assert [w["id"] for w in cancelled] == [ids[0]]
    assert client.get("/v1/workflows?cursor=@@", headers=AUTH).status_code == 400


def test_cancel_a_queued_workflow_then_retry_it(client, clip, redis_client):
    flow = client.post("/v1/workflows", headers=AUTH, json=dag(clip)).json()
    cancelled = client.post(f"/v1/workflows/{flow['id']}/cancel", headers=AUTH)
    assert cancelled.status_code == 202, cancelled.text
    steps = {s["name"]: s for s in cancelled.json()["steps"]}
    assert cancelled.json()["status"] == "cancelled"
    assert steps["transcode"]["job_status"] == "cancelled" and steps["thumbs"]["status"] == "cancelled"
    assert redis_client.llen("cpu.normal") == 0  # the queued step's message is gone
    assert client.post(f"/v1/workflows/{flow['id']}/cancel", headers=AUTH).status_code == 409
    retried = client.post(f"/v1/workflows/{flow['id']}/retry", headers=AUTH)
    assert retried.status_code == 202
    steps = {s["name"]: s for s in retried.json()["steps"]}
    assert steps["transcode"]["previous_jobs"] == [flow["steps"][0]["job_id"]]
    assert steps["transcode"]["job_status"] == "queued" and steps["thumbs"]["status"] == "pending"
    assert client.post(f"/v1/workflows/{flow['id']}/retry", headers=AUTH).status_code == 409
    # A step's job is retried through its workflow, never on its own (the workflow would not see that run).
    step_job = client.post(f"/v1/jobs/{flow['steps'][0]['job_id']}/retry", headers=AUTH)
    assert step_job.status_code == 409 and step_job.json()["error"]["details"]["workflow_id"] == flow["id"]


def test_templates_are_listed_with_their_params_schema(client):
    templates = {t["name"]: t for t in client.get("/v1/workflow-templates", headers=AUTH).json()}
    assert set(templates) == set(TEMPLATES)
    analysis = templates["video-analysis"]
    assert "height" in analysis["params_schema"]["properties"]
    assert {"probe", "transcode", "thumbnail", "extract_audio", "transcribe", "vision"} <= \
        {s["name"] for s in analysis["steps"]}
    assert client.get("/v1/workflow-templates").status_code == 401


def test_a_finished_workflows_events_stream_sends_its_state_and_ends(client, clip):
    flow = client.post("/v1/workflows", headers=AUTH, json=dag(clip)).json()
    client.post(f"/v1/workflows/{flow['id']}/cancel", headers=AUTH)
    with client.stream("GET", f"/v1/workflows/{flow['id']}/events", headers=AUTH) as response:
        text = "".join(response.iter_text())
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1]["id"] == flow["id"] and events[-1]["status"] == "cancelled"


def test_a_running_workflows_stream_resumes_after_the_version_already_seen(client, clip, settings):
    """Reconnecting with the Last-Event-ID of the current version sends no repeat of it
    (the stream's lifetime is short here, so it ends on its own)."""
    settings.sse_max_lifetime_s = 1.0
    flow = client.post("/v1/workflows", headers=AUTH, json=dag(clip)).json()

    def events(headers):
        with client.stream("GET", f"/v1/workflows/{flow['id']}/events", headers=AUTH | headers) as response:
            text = "".join(response.iter_text())
        return [line[4:] for line in text.splitlines() if line.startswith("id: ")]

    first = events({})
    assert len(first) == 1
    assert events({"Last-Event-ID": first[0]}) == []
    assert events({"Last-Event-ID": "something-older"}) == first
