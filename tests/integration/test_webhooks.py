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


# --- delivery off the maintenance loop, bounded in time and size ---------------------------


class _Serve:
    """A real HTTP receiver on a free port whose POST handler is ``behaviour(handler)``."""

    def __init__(self, behaviour):
        self.requests = 0
        self.answered = 0
        self.bytes_written = 0
        self.release = threading.Event()
        serve = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                serve.requests += 1
                try:
                    behaviour(self, serve)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                serve.answered += 1

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def _slow(handler, serve):
    serve.release.wait(15)
    handler.send_response(204)
    handler.end_headers()


def _trickle(handler, serve):
    handler.send_response(200)
    handler.send_header("Content-Length", "100000")
    handler.end_headers()
    for _ in range(300):  # one byte every 0.1 s: each read is quick, the whole answer never ends
        if serve.release.is_set():
            return
        handler.wfile.write(b"x")
        handler.wfile.flush()
        time.sleep(0.1)


def _huge(handler, serve):
    chunk = b"x" * (1 << 20)
    handler.send_response(200)
    handler.send_header("Content-Length", str(64 * len(chunk)))
    handler.end_headers()
    for _ in range(64):
        handler.wfile.write(chunk)
        serve.bytes_written += len(chunk)


def _terminal_jobs_with_webhooks(settings, data_dir, url, count) -> list[str]:
    return [_submit_and_cancel(settings, data_dir, url) for _ in range(count)]


def test_a_trickling_receiver_is_cut_off_at_the_total_time_limit(settings, data_dir):
    receiver = _Serve(_trickle)
    try:
        [job_id] = _terminal_jobs_with_webhooks(settings, data_dir, receiver.url, 1)
        bounded = settings.model_copy(update={"webhook_timeout_s": 1.0})
        store = JobStore(make_redis(bounded))
        started = time.monotonic()
        assert deliver_due(store, bounded) == 0
        took = time.monotonic() - started
        assert took < 3.0, took  # 1 s budget, not the 30 s the receiver would take
        assert store.redis.zscore(WEBHOOKS, job_id) > time.time()  # tried again later, not dropped
    finally:
        receiver.close()


def test_a_huge_response_is_not_read_whole(settings, data_dir):
    receiver = _Serve(_huge)
    try:
        [job_id] = _terminal_jobs_with_webhooks(settings, data_dir, receiver.url, 1)
        store = JobStore(make_redis(settings))
        assert deliver_due(store, settings) == 1
        assert store.get(job_id).webhook_delivery == "delivered"
        time.sleep(0.5)
        # The sender read its 64 KiB and hung up: the receiver could not push its 64 MiB.
        assert receiver.bytes_written < 32 * (1 << 20), receiver.bytes_written
    finally:
        receiver.close()


def test_a_slow_receiver_does_not_delay_orphan_recovery_in_a_real_beat(settings, data_dir, rf_settings_env):
    """A real beat process, a real HTTP receiver that holds each webhook for 15 s:
    maintenance passes go on every second and an orphaned job is requeued on time."""
    from renderfarm.core.kinds import get_kind
    from renderfarm.core.queues import Priority
    from renderfarm.core.submit import job_message, new_job
    from tests.support.procs import PYTHON, ServiceProcess, wait_for

    receiver = _Serve(_slow)
    beat = None
    try:
        _terminal_jobs_with_webhooks(settings, data_dir, receiver.url, 3)
        env = dict(rf_settings_env, RF_WEBHOOK_SECRET=SECRET, RF_ALLOW_PRIVATE_FETCH="true",
                   RF_WEBHOOK_TIMEOUT_S="30", RF_ORPHAN_AFTER_S="1")
        beat = ServiceProcess([PYTHON, "-m", "renderfarm.worker.beat"], env, data_dir / "logs" / "beat.log").start()
        wait_for(lambda: receiver.requests >= 1, 20, what="the first webhook to reach the receiver")

        # A job whose run vanished: claimed with a 1 s lease that nobody renews.
        store = JobStore(make_redis(settings))
        kind = get_kind("probe")
        orphan = new_job(kind, input=(data_dir / "inputs" / "c.mp4").as_uri(), params={}, priority=Priority.normal)
        store.submit(orphan, job_message(kind, orphan))
        store.redis.rpop(orphan.queue)  # taken off the queue, as a worker would
        assert store.claim(orphan.id, "ghost@gone", max_attempts=3, lease_s=1).outcome == "run"
        marked = time.monotonic()

        beats, requeued_after = [], None
        while time.monotonic() - marked < 8:
            beats.append(float(store.redis.get("rf:beat") or 0))
            if requeued_after is None and store.status_of(orphan.id).value != "running":
                requeued_after = time.monotonic() - marked
            time.sleep(0.1)
        assert receiver.answered == 0  # every webhook was still being held the whole time
        assert requeued_after is not None and requeued_after < 7, (requeued_after, beat.log()[-2000:])
        passes = sorted(set(beats))
        gaps = [later - earlier for earlier, later in zip(passes, passes[1:])]
        assert len(passes) >= 5 and max(gaps) < 2.5, (gaps, beat.log()[-2000:])
    finally:
        receiver.close()
        if beat is not None:
            beat.stop()
