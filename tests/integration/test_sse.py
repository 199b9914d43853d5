"""The job event stream (SSE) against a real API process and a real redis-server:
keep-alive comments at the configured interval, a maximum lifetime after which the
stream ends cleanly, and a resume with Last-Event-ID that never misses the end."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.support.media import make_clip
from tests.support.procs import start_api

KEY = "sse-test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
KEEPALIVE_S = 0.3
LIFETIME_S = 2.0


@pytest.fixture
def api(rf_settings_env):
    env = dict(rf_settings_env, RF_API_KEYS=KEY, RF_SSE_KEEPALIVE_S=str(KEEPALIVE_S),
               RF_SSE_MAX_LIFETIME_S=str(LIFETIME_S))
    proc, base = start_api(env)
    try:
        yield base
    finally:
        proc.stop()


@pytest.fixture
def queued_job(api, data_dir):
    clip = make_clip(data_dir / "inputs" / "clip.mp4", duration=1)
    response = httpx.post(f"{api}/v1/jobs", headers=AUTH, json={"kind": "probe", "input": clip.as_uri()})
    assert response.status_code == 202
    return response.json()  # no worker: it stays queued


def read_stream(base: str, job_id: str, headers: dict | None = None, on_first_event=None):
    """(events as (id, name, data), keep-alive comments, seconds until the server ended the stream)."""
    events, comments = [], []
    started = time.monotonic()
    # The read timeout is shorter than the default keep-alive: a silent stream fails here.
    with httpx.stream("GET", f"{base}/v1/jobs/{job_id}/events", headers=AUTH | (headers or {}),
                      timeout=httpx.Timeout(5.0, read=3.0)) as response:
        assert response.status_code == 200, response.read()
        event_id, name = None, None
        for line in response.iter_lines():
            if line.startswith(":"):
                comments.append(line)
            elif line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((event_id, name, json.loads(line[6:])))
                if on_first_event is not None and len(events) == 1:
                    on_first_event()
                event_id, name = None, None
    return events, comments, time.monotonic() - started


def test_stream_sends_keepalives_and_ends_cleanly_after_its_lifetime(api, queued_job):
    events, comments, took = read_stream(api, queued_job["id"])
    [(event_id, name, data)] = events
    assert name == "job" and data["status"] == "queued" and event_id
    keepalives = [c for c in comments if "keep-alive" in c]
    # About lifetime / interval of them; a loose lower bound keeps a busy machine out of it.
    assert len(keepalives) >= 3, comments
    assert LIFETIME_S - 0.2 <= took <= LIFETIME_S + 2.0, took  # it ended by itself, without an error


def test_resume_with_last_event_id_gets_the_final_state_that_happened_meanwhile(api, queued_job):
    job_id = queued_job["id"]
    events, _, _ = read_stream(api, job_id)
    last_id = events[-1][0]

    # Reconnecting with nothing changed: the client already has this state, no duplicate.
    events, comments, _ = read_stream(api, job_id, {"Last-Event-ID": last_id})
    assert events == [] and any("keep-alive" in c for c in comments)

    # The job ends while the client is away ...
    assert httpx.post(f"{api}/v1/jobs/{job_id}/cancel", headers=AUTH).status_code == 202
    # ... and the resumed stream starts with that final state, then ends at once.
    events, _, took = read_stream(api, job_id, {"Last-Event-ID": last_id})
    [(event_id, name, data)] = events
    assert name == "job" and data["status"] == "cancelled" and event_id != last_id
    assert took < LIFETIME_S

    # Even a client that had the final state gets it again (it knows the stream is over).
    events, _, _ = read_stream(api, job_id, {"Last-Event-ID": event_id})
    assert [(name, data["status"]) for _, name, data in events] == [("job", "cancelled")]


def test_a_change_during_the_stream_comes_as_an_event_then_the_final_job(api, queued_job):
    job_id = queued_job["id"]

    def cancel():
        assert httpx.post(f"{api}/v1/jobs/{job_id}/cancel", headers=AUTH).status_code == 202

    events, _, took = read_stream(api, job_id, on_first_event=cancel)
    assert [(name, data["status"]) for _, name, data in events] == [
        ("job", "queued"), ("progress", "cancelled"), ("job", "cancelled")]
    assert all(event_id for event_id, _, _ in events)
    assert took < LIFETIME_S
