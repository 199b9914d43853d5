"""Webhook delivery (run by beat): POST the finished job, signed, with retries.

Each hop is checked like an http input (no private, loopback, link-local or
metadata addresses unless allowed) and the connection goes to the checked
address, so a receiver's DNS cannot be turned against the cluster.
"""

from __future__ import annotations

import logging
import time

import httpx

from renderfarm.core.inputs import InputError, check_http_url
from renderfarm.core.settings import Settings
from renderfarm.core.store import WEBHOOKS, JobNotFound, JobStore, job_key
from renderfarm.core.webhooks import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    next_attempt_delay_s,
    sign,
)
from renderfarm.worker.fetch import pinned_target

log = logging.getLogger("renderfarm.webhooks")


def deliver_due(store: JobStore, settings: Settings, limit: int = 50) -> int:
    """Deliver due webhooks; returns how many were delivered."""
    now = time.time()
    delivered = 0
    for job_id in store.redis.zrangebyscore(WEBHOOKS, "-inf", now, start=0, num=limit):
        # Claim it for a while so two beats never post the same delivery at once.
        if not store.redis.zadd(WEBHOOKS, {job_id: now + 60}, xx=True, gt=True, ch=True):
            continue
        try:
            job = store.get(job_id)
        except JobNotFound:
            store.redis.zrem(WEBHOOKS, job_id)
            continue
        attempts = int(store.redis.hincrby(job_key(job_id), "webhook_attempts", 1))
        outcome = _post(job.model_dump_json().encode(), job.webhook_url or "", job.status.value, settings)
        if outcome is None:
            store.redis.zrem(WEBHOOKS, job_id)
            store.redis.hset(job_key(job_id), "webhook_delivery", "delivered")
            delivered += 1
            continue
        delay = next_attempt_delay_s(attempts)
        if delay is None or outcome.startswith("refused"):
            store.redis.zrem(WEBHOOKS, job_id)
            store.redis.hset(job_key(job_id), "webhook_delivery", f"given up after {attempts} attempts: {outcome}")
            log.warning("webhook for job %s given up: %s", job_id, outcome)
        else:
            store.redis.zadd(WEBHOOKS, {job_id: time.time() + delay})
    return delivered


def _post(body: bytes, url: str, event: str, settings: Settings) -> str | None:
    """None when delivered, else why not ("refused: ..." is final)."""
    if not settings.webhook_secret:
        return "refused: RF_WEBHOOK_SECRET is not set"
    try:
        addresses = check_http_url(url, allow_private=settings.allow_private_fetch)
    except InputError as exc:
        return f"refused: {exc}"
    timestamp = int(time.time())
    target, headers, extensions = pinned_target(httpx.URL(url), addresses[0] if addresses else None)
    headers |= {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(settings.webhook_secret.get_secret_value(), timestamp, body),
        EVENT_HEADER: f"job.{event}",
    }
    try:
        with httpx.Client(timeout=settings.webhook_timeout_s, follow_redirects=False, trust_env=False) as client:
            request = client.build_request("POST", target, headers=headers, content=body, extensions=extensions)
            response = client.send(request)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"
