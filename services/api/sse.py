"""Server-Sent Events framing and the ids that let a client resume (pure).

Each event's ``id`` names the job state it carries (status, progress, stage,
message). A client that reconnects sends the last id it saw as ``Last-Event-ID``;
the stream then starts with the job's current state unless that is exactly the
state the client already has. A finished job's state is always sent, so a
client never misses the end, however long it was away.
"""

from __future__ import annotations

import hashlib

RETRY_MS = 1000  # how soon an EventSource reconnects after the stream ends


def state_id(status: str, progress: float, stage: str, message: str) -> str:
    text = f"{status}|{float(progress):.2f}|{stage}|{message}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def event(name: str, data: str, event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {name}\ndata: {data}\n\n"


def comment(text: str) -> str:
    return f": {text}\n\n"


def retry(ms: int = RETRY_MS) -> str:
    return f"retry: {ms}\n\n"
