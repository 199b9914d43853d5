"""Webhook delivery: POST the finished job, signed, with retries, off beat's
maintenance loop.

Due deliveries live in Redis (``rf:webhooks``, scored by when they are due), so
they survive restarts: a delivery is claimed by pushing its due time past the
delivery's whole time budget, and removed only once it succeeded or was given up.
A beat that dies mid-delivery leaves the entry behind and the next one delivers
it (at least once: a receiver dedupes on the job id).

``WebhookSender`` runs deliveries on a thread of its own, several at once, each
bounded in total time (``RF_WEBHOOK_TIMEOUT_S``, connect to last byte) and in how
much of the response is read (``RF_WEBHOOK_MAX_RESPONSE_BYTES``), so a slow or
chatty receiver never holds up orphan recovery or aging.

Each hop is checked like an http input (no private, loopback, link-local or
metadata addresses unless allowed) and the connection goes to the checked
address, so a receiver's DNS cannot be turned against the cluster.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import httpx

from renderfarm.core.inputs import InputError, check_http_url
from renderfarm.core.metrics_store import record_webhook
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobNotFound, JobStore
from renderfarm.core.webhooks import (
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    next_attempt_delay_s,
    sign,
)
from renderfarm.worker.fetch import pinned_target

log = logging.getLogger("renderfarm.webhooks")

# A claimed delivery is due again this long after its time budget, should its
# sender die mid-way.
CLAIM_MARGIN_S = 30.0
POLL_S = 0.5


def deliver_due(store: JobStore, settings: Settings, limit: int = 50) -> int:
    """Deliver the webhooks due now (concurrently); returns how many were delivered."""
    return asyncio.run(deliver_due_async(store, settings, limit))


async def deliver_due_async(store: JobStore, settings: Settings, limit: int = 50) -> int:
    now = time.time()
    # Claimed for the delivery's whole budget so two senders never post one at once.
    claimed = store.claim_due_webhooks(now, now + settings.webhook_timeout_s + CLAIM_MARGIN_S, limit)
    if not claimed:
        return 0
    slots = asyncio.Semaphore(max(1, settings.webhook_concurrency))
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False,
                                 timeout=settings.webhook_timeout_s) as client:
        results = await asyncio.gather(*(_deliver_one(store, settings, client, slots, job_id) for job_id in claimed))
    return sum(results)


async def _deliver_one(store: JobStore, settings: Settings, client: httpx.AsyncClient,
                       slots: asyncio.Semaphore, job_id: str) -> int:
    try:
        job = store.get(job_id)
    except JobNotFound:
        store.forget_webhook(job_id)
        return 0
    attempts = store.count_webhook_attempt(job_id)
    async with slots:
        outcome = await _post(client, job.model_dump_json().encode(), job.webhook_url or "", job.status.value, settings)
    if outcome is None:
        store.webhook_done(job_id, "delivered")
        record_webhook(store.redis, "delivered")
        return 1
    delay = next_attempt_delay_s(attempts)
    if delay is None or outcome.startswith("refused"):
        store.webhook_done(job_id, f"given up after {attempts} attempts: {outcome}")
        record_webhook(store.redis, "given_up")
        log.warning("webhook for job %s given up: %s", job_id, outcome)
    else:
        store.webhook_retry_at(job_id, time.time() + delay)
        record_webhook(store.redis, "retry")
        log.info("webhook for job %s not delivered (%s); next attempt in %.0f s", job_id, outcome, delay)
    return 0


async def _post(client: httpx.AsyncClient, body: bytes, url: str, event: str, settings: Settings) -> str | None:
    """None when delivered, else why not ("refused: ..." is final)."""
    if not settings.webhook_secret:
        return "refused: RF_WEBHOOK_SECRET is not set"
    try:
        addresses = await asyncio.to_thread(check_http_url, url, allow_private=settings.allow_private_fetch)
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
        # One budget for the whole exchange: a receiver that trickles bytes resets
        # httpx's per-read timeout forever, never this one.
        async with asyncio.timeout(settings.webhook_timeout_s):
            async with client.stream("POST", target, headers=headers, content=body,
                                     extensions=extensions) as response:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= settings.webhook_max_response_bytes:
                        break  # the status is all we need; never buffer a huge answer
    except TimeoutError:
        return f"no complete answer within {settings.webhook_timeout_s:g} s"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


class WebhookSender:
    """Delivers due webhooks on its own thread until stopped."""

    def __init__(self, store: JobStore, settings: Settings):
        self.store = store
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="webhook-sender", daemon=True)

    def start(self) -> "WebhookSender":
        self._thread.start()
        return self

    def stop(self) -> None:
        """Let the deliveries in flight finish (each is bounded in time), then return."""
        self._stop.set()
        self._thread.join(timeout=self.settings.webhook_timeout_s + 5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                deliver_due(self.store, self.settings)
            except Exception as exc:  # Redis restarting: keep going
                log.warning("webhook delivery pass failed: %s", exc)
            self._stop.wait(POLL_S)
