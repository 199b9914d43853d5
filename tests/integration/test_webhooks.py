"""Signed webhooks: delivered by beat to a real local HTTP receiver, retried on errors."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from renderfarm.api.app import create_app
from renderfarm.core.settings import Settings
from renderfarm.core.store import WEBHOOKS, JobStore
from renderfarm.core.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from renderfarm.core.redis_conn import redis_client as make_redis
from renderfarm.worker.webhooks import deliver_due
from tests.support.media import make_clip

SECRET = "s3cret-for-tests"
KEY = "key-for-webhook-tests"


class Receiver(http.server.BaseHTTPRequestHandler):
    received: list = []
    fail_first = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(500)
            self.end_headers()
            return
        type(self).received.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    server.shutdown()


@pytest.fixture
def settings(redis_server, redis_client, data_dir):
    return Settings(redis_url=redis_server.url, data_dir=data_dir, api_keys=[KEY], webhook_secret=SECRET,
                    allow_private_fetch=True, allowed_input_roots=[data_dir / "inputs"])


def _submit_and_cancel(settings, data_dir, url) -> str:
    clip = make_clip(data_dir / "inputs" / "c.mp4", duration=1)
    with TestClient(create_app(settings)) as client:
        headers = {"Authorization": f"Bearer {KEY}"}
        job = client.post("/v1/jobs", headers=headers, json={"kind": "probe", "input": clip.as_uri(), "webhook_url": url}).json()
        assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers).status_code == 202
    return job["id"]


def test_finished_job_webhook_is_signed_and_delivered_once(settings, data_dir, receiver):
    job_id = _submit_and_cancel(settings, data_dir, receiver)
    store = JobStore(make_redis(settings))
    assert store.redis.zscore(WEBHOOKS, job_id) is not None  # scheduled with the terminal transition
    assert deliver_due(store, settings) == 1
    assert deliver_due(store, settings) == 0
    [(headers, body)] = Receiver.received
    assert verify(SECRET, int(headers[TIMESTAMP_HEADER]), body, headers[SIGNATURE_HEADER], now=time.time())
    assert not verify("wrong", int(headers[TIMESTAMP_HEADER]), body, headers[SIGNATURE_HEADER], now=time.time())
    payload = json.loads(body)
    assert payload["id"] == job_id and payload["status"] == "cancelled"
    assert store.get(job_id).webhook_delivery == "delivered"


def test_failed_delivery_is_retried_later(settings, data_dir, receiver):
    Receiver.fail_first = 1
    job_id = _submit_and_cancel(settings, data_dir, receiver)
    store = JobStore(make_redis(settings))
    assert deliver_due(store, settings) == 0
    due = store.redis.zscore(WEBHOOKS, job_id)
    assert due is not None and due > time.time()  # backed off, not dropped
    store.redis.zadd(WEBHOOKS, {job_id: time.time() - 1})  # skip the wait
    assert deliver_due(store, settings) == 1
    assert len(Receiver.received) == 1


def test_webhook_to_private_address_is_refused_at_submit(redis_server, redis_client, data_dir):
    settings = Settings(redis_url=redis_server.url, data_dir=data_dir, api_keys=[KEY], webhook_secret=SECRET,
                        allowed_input_roots=[data_dir / "inputs"])
    clip = make_clip(data_dir / "inputs" / "c.mp4", duration=1)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/jobs", headers={"Authorization": f"Bearer {KEY}"},
                               json={"kind": "probe", "input": clip.as_uri(), "webhook_url": "http://169.254.169.254/x"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_webhook"
    assert redis_client.dbsize() == 0


def test_webhook_without_a_secret_is_refused(redis_server, redis_client, data_dir):
    settings = Settings(redis_url=redis_server.url, data_dir=data_dir, api_keys=[KEY], allowed_input_roots=[data_dir / "inputs"])
    clip = make_clip(data_dir / "inputs" / "c.mp4", duration=1)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/jobs", headers={"Authorization": f"Bearer {KEY}"},
                               json={"kind": "probe", "input": clip.as_uri(), "webhook_url": "https://example.com/x"})
    assert response.status_code == 422 and "RF_WEBHOOK_SECRET" in response.json()["error"]["message"]
    assert redis_client.dbsize() == 0
