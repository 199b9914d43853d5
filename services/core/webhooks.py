"""Webhook payloads, signatures and the delivery schedule (pure).

A job with ``webhook_url`` gets one POST when it ends (succeeded, failed or
cancelled). The body is the job as JSON; the headers carry a timestamp and an
HMAC-SHA256 over ``"<timestamp>.<body>"`` with ``RF_WEBHOOK_SECRET``, so a
receiver can check origin and reject replays (compare the timestamp to its clock).
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Renderfarm-Signature"
TIMESTAMP_HEADER = "X-Renderfarm-Timestamp"
EVENT_HEADER = "X-Renderfarm-Event"
MAX_ATTEMPTS = 8


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify(secret: str, timestamp: int, body: bytes, signature: str, *, now: float, tolerance_s: int = 300) -> bool:
    """What a receiver does (and what the tests do)."""
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def next_attempt_delay_s(attempts_done: int) -> float | None:
    """Backoff between deliveries (5 s, 10 s, 20 s … capped at 1 h); None = give up."""
    if attempts_done >= MAX_ATTEMPTS:
        return None
    return min(3600.0, 5.0 * 2 ** (attempts_done - 1)) if attempts_done > 0 else 0.0
