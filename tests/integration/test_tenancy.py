"""Tenants and scopes, against a real API process and a real redis-server (no worker:
jobs stay queued). A key sees only its own tenant's jobs; another tenant's job is
a 404 exactly like a job that does not exist; scopes gate what a key may do."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from typer.testing import CliRunner

from renderfarm.cli import app as cli_app
from renderfarm.core.apikeys import API_KEYS, Scope, create_api_key, decode_record
from tests.support.media import make_clip
from tests.support.procs import start_api

OPERATOR_KEY = "operator-key-0123456789"


@pytest.fixture
def api(rf_settings_env):
    proc, base = start_api(dict(rf_settings_env, RF_API_KEYS=OPERATOR_KEY))
    try:
        yield base
    finally:
        proc.stop()


@pytest.fixture
def clip(data_dir):
    return make_clip(data_dir / "inputs" / "clip.mp4", duration=1)


def key_for(redis_client, tenant: str, *scopes: Scope) -> dict[str, str]:
    key = create_api_key(redis_client, tenant, frozenset(scopes or (Scope.jobs,)))
    return {"Authorization": f"Bearer {key}"}


def submit(base: str, headers: dict, clip, kind: str = "probe", extra_headers: dict | None = None,
           **fields) -> httpx.Response:
    body = {"kind": kind, "input": clip.as_uri()} | fields
    return httpx.post(f"{base}/v1/jobs", json=body, headers=headers | (extra_headers or {}), timeout=10)


def test_another_tenants_job_is_a_404_for_get_cancel_retry_and_events(api, redis_client, clip):
    alice, bob = key_for(redis_client, "alice"), key_for(redis_client, "bob")
    job = submit(api, alice, clip).json()
    job_id = job["id"]

    missing_id = uuid.uuid4().hex
    missing = httpx.get(f"{api}/v1/jobs/{missing_id}", headers=bob)
    assert missing.status_code == 404

    def same_as_missing(response: httpx.Response) -> None:
        assert response.status_code == 404, response.text
        # Byte for byte what a job that does not exist answers (only the id differs).
        assert response.text == missing.text.replace(missing_id, job_id)

    same_as_missing(httpx.get(f"{api}/v1/jobs/{job_id}", headers=bob))
    same_as_missing(httpx.post(f"{api}/v1/jobs/{job_id}/cancel", headers=bob))
    same_as_missing(httpx.post(f"{api}/v1/jobs/{job_id}/retry", headers=bob))
    same_as_missing(httpx.get(f"{api}/v1/jobs/{job_id}/events", headers=bob, timeout=5))

    # Bob's cancel did nothing: the job is still queued, its message still waiting.
    assert httpx.get(f"{api}/v1/jobs/{job_id}", headers=alice).json()["status"] == "queued"
    assert redis_client.llen("cpu.normal") == 1
    cancelled = httpx.post(f"{api}/v1/jobs/{job_id}/cancel", headers=alice)
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    same_as_missing(httpx.post(f"{api}/v1/jobs/{job_id}/retry", headers=bob))
    assert httpx.get(f"{api}/v1/jobs/{job_id}", headers=alice).json()["status"] == "cancelled"


def test_listing_shows_only_the_tenants_jobs_through_every_filter_and_page(api, redis_client, clip):
    alice, bob = key_for(redis_client, "alice"), key_for(redis_client, "bob")
    alice_ids, bob_ids = [], []
    for n in range(5):
        alice_ids.append(submit(api, alice, clip, kind="probe" if n % 2 else "thumbnail").json()["id"])
        if n < 3:
            bob_ids.append(submit(api, bob, clip).json()["id"])

    def listing(headers, **params) -> list[str]:
        seen, cursor = [], None
        while True:
            page = httpx.get(f"{api}/v1/jobs", headers=headers,
                             params=params | {"limit": 2} | ({"cursor": cursor} if cursor else {})).json()
            seen += [job["id"] for job in page["jobs"]]
            cursor = page["next_cursor"]
            if not cursor:
                return seen

    assert listing(bob) == list(reversed(bob_ids))
    assert listing(alice) == list(reversed(alice_ids))
    assert listing(bob, status="queued") == list(reversed(bob_ids))
    assert listing(bob, kind="thumbnail") == []
    assert listing(alice, kind="thumbnail") == [alice_ids[4], alice_ids[2], alice_ids[0]]
    httpx.post(f"{api}/v1/jobs/{alice_ids[1]}/cancel", headers=alice)
    assert listing(alice, status="cancelled") == [alice_ids[1]]
    assert listing(bob, status="cancelled") == []
    assert alice_ids[1] not in listing(alice, status="queued")


def test_a_tenants_listing_reads_only_its_own_index(api, redis_client, clip):
    """Listing costs the same however many jobs other tenants have: one record read
    per own job, not a filter over every job in the farm."""
    alice, bob = key_for(redis_client, "alice"), key_for(redis_client, "bob")
    for _ in range(60):
        assert submit(api, alice, clip).status_code == 202
    mine = [submit(api, bob, clip).json()["id"] for _ in range(2)]
    redis_client.config_resetstat()
    page = httpx.get(f"{api}/v1/jobs", headers=bob, params={"limit": 50}).json()
    stats = redis_client.info("commandstats")
    reads = stats.get("cmdstat_hgetall", {}).get("calls", 0)
    assert [job["id"] for job in page["jobs"]] == list(reversed(mine))
    assert reads <= len(mine) + 2, stats  # (+2: the API's key-table refresh may fall in between)


def test_scopes_gate_submit_read_and_queue_control(api, redis_client, clip):
    jobs_only = key_for(redis_client, "alice", Scope.jobs)
    admin_only = key_for(redis_client, "ops", Scope.admin)
    both = key_for(redis_client, "ops", Scope.jobs, Scope.admin)

    def forbidden(response: httpx.Response, scope: str) -> None:
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["code"] == "forbidden" and error["details"]["required_scope"] == scope

    forbidden(httpx.post(f"{api}/v1/queues/cpu.low/pause", headers=jobs_only), "admin")
    forbidden(httpx.post(f"{api}/v1/queues/cpu.low/resume", headers=jobs_only), "admin")
    forbidden(httpx.get(f"{api}/v1/workers", headers=jobs_only), "admin")
    forbidden(httpx.get(f"{api}/v1/stats", headers=jobs_only), "admin")
    assert not redis_client.sismember("rf:paused", "cpu.low")

    forbidden(submit(api, admin_only, clip), "jobs")
    forbidden(httpx.get(f"{api}/v1/jobs", headers=admin_only), "jobs")
    assert redis_client.llen("cpu.normal") == 0

    assert submit(api, jobs_only, clip).status_code == 202
    assert httpx.post(f"{api}/v1/queues/cpu.low/pause", headers=admin_only).json()["paused"] is True
    assert httpx.post(f"{api}/v1/queues/cpu.low/resume", headers=both).json()["paused"] is False
    assert httpx.get(f"{api}/v1/workers", headers=admin_only).status_code == 200
    stats = httpx.get(f"{api}/v1/stats", headers=admin_only).json()
    assert stats["jobs_by_status"]["queued"] == 1
    # Facts that hold no tenant's data need just a valid key.
    for path in ("/v1/queues", "/v1/kinds", "/v1/status"):
        assert httpx.get(f"{api}{path}", headers=jobs_only).status_code == 200
        assert httpx.get(f"{api}{path}", headers=admin_only).status_code == 200
    # The operator's keys from the environment may do everything.
    operator = {"X-API-Key": OPERATOR_KEY}
    assert httpx.post(f"{api}/v1/queues/cpu.low/pause", headers=operator).status_code == 200
    assert submit(api, operator, clip).json()["tenant"] == "default"


def test_idempotency_keys_are_per_tenant(api, redis_client, clip):
    alice, bob = key_for(redis_client, "alice"), key_for(redis_client, "bob")
    first = submit(api, alice, clip, extra_headers={"Idempotency-Key": "k-1"})
    other = submit(api, bob, clip, priority="low", extra_headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202 and other.status_code == 202, other.text
    assert first.json()["id"] != other.json()["id"]
    assert other.json()["tenant"] == "bob" and other.json()["queue"] == "cpu.low"
    replay = submit(api, alice, clip, extra_headers={"Idempotency-Key": "k-1"})
    assert replay.json()["id"] == first.json()["id"] and replay.headers["Idempotent-Replayed"] == "true"
    assert submit(api, bob, clip, extra_headers={"Idempotency-Key": "k-1"}).status_code == 409  # bob's own body differs


def test_cli_apikey_create_with_tenant_and_scopes(api, redis_client, clip):
    result = CliRunner().invoke(cli_app, ["apikey", "create", "--tenant", "media-team", "--scope", "jobs",
                                          "--scope", "admin"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    [stored] = redis_client.hgetall(API_KEYS).values()
    assert key not in json.dumps(stored)  # only the digest
    record = decode_record(stored)
    assert record.tenant == "media-team" and record.scopes == {Scope.jobs, Scope.admin}
    headers = {"Authorization": f"Bearer {key}"}
    assert submit(api, headers, clip).json()["tenant"] == "media-team"
    assert httpx.post(f"{api}/v1/queues/cpu.high/pause", headers=headers).status_code == 200

    plain = CliRunner().invoke(cli_app, ["apikey", "create", "--tenant", "viewers"], catch_exceptions=False)
    plain_headers = {"Authorization": f"Bearer {plain.stdout.strip()}"}
    assert httpx.post(f"{api}/v1/queues/cpu.high/resume", headers=plain_headers).status_code == 403  # jobs only

    bad = CliRunner().invoke(cli_app, ["apikey", "create", "--scope", "root"])
    assert bad.exit_code == 2
    bad_tenant = CliRunner().invoke(cli_app, ["apikey", "create", "--tenant", "a:b"])
    assert bad_tenant.exit_code == 2 and "tenant" in bad_tenant.output
