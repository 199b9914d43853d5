"""A small HTTP client for the renderfarm REST API (sync httpx)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_API_URL = "http://127.0.0.1:8000"
# Where ``renderfarm local`` writes the key it generated (relative to the working directory).
LOCAL_KEY_FILE = Path("data") / ".api-key"


class ApiError(Exception):
    """The API answered with an error (``{"error": {"code", "message", "details"}}``)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class ApiUnreachable(Exception):
    """No HTTP answer at all: connection refused, DNS failure, timeout."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"the API at {url} is unreachable: {reason}")
        self.url = url
        self.reason = reason


def resolve_api_key(explicit: str | None, key_file: Path = LOCAL_KEY_FILE) -> str | None:
    """``--api-key`` / ``RF_API_KEY`` first; otherwise the key the local runner wrote, if any."""
    if explicit:
        return explicit.strip()
    try:
        text = key_file.read_text().strip()
    except OSError:
        return None
    return text or None


def resolve_api_url(explicit: str | None) -> str:
    return (explicit or os.environ.get("RF_API_URL") or DEFAULT_API_URL).rstrip("/")


def _error_from_response(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return ApiError(response.status_code, str(err.get("code", "error")), str(err.get("message", "")),
                        err.get("details"))
    if isinstance(body, dict) and "detail" in body:  # a plain FastAPI error
        return ApiError(response.status_code, "http_error", str(body["detail"]))
    text = response.text.strip()[:300] or response.reason_phrase
    return ApiError(response.status_code, "http_error", f"HTTP {response.status_code}: {text}")


@dataclass
class SseEvent:
    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def iter_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    """Parse a text/event-stream line by line (comments such as keep-alives are skipped)."""
    event, data, event_id = "message", [], None
    for line in lines:
        if line == "":
            if data:
                yield SseEvent(event, "\n".join(data), event_id)
            event, data, event_id = "message", [], None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            event_id = value
    if data:
        yield SseEvent(event, "\n".join(data), event_id)


class RenderfarmClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 15.0,
                 transport: httpx.BaseTransport | None = None):
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": "application/json", "User-Agent": "renderfarm-cli"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "RenderfarmClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.base_url, _reason(exc)) from None
        if response.status_code >= 400:
            raise _error_from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "bad_response",
                           f"the API answered with something that is not JSON: {response.text[:200]!r}") from None

    # -- jobs -------------------------------------------------------------------

    def submit(self, kind: str, input: str, params: dict[str, Any] | None = None, priority: str = "normal",
               labels: dict[str, str] | None = None, webhook_url: str | None = None,
               idempotency_key: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "input": input, "params": params or {}, "priority": priority,
                                "labels": labels or {}}
        if webhook_url:
            body["webhook_url"] = webhook_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", "/v1/jobs", json=body, headers=headers)

    def job(self, job_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/jobs/{job_id}")

    def jobs_page(self, status: str | None = None, kind: str | None = None, limit: int = 50,
                  cursor: str | None = None) -> dict[str, Any]:
        query = {k: v for k, v in {"status": status, "kind": kind, "limit": limit, "cursor": cursor}.items()
                 if v is not None}
        return self.request("GET", "/v1/jobs", params=query)

    def iter_jobs(self, status: str | None = None, kind: str | None = None, limit: int = 50,
                  cursor: str | None = None) -> Iterator[dict[str, Any]]:
        """Every job, following ``next_cursor`` page by page."""
        while True:
            page = self.jobs_page(status=status, kind=kind, limit=limit, cursor=cursor)
            yield from page.get("jobs", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/jobs/{job_id}/cancel")

    def retry(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/jobs/{job_id}/retry")

    def delete(self, job_id: str) -> None:
        self.request("DELETE", f"/v1/jobs/{job_id}")

    # -- manual review ------------------------------------------------------------

    def review_page(self, kind: str | None = None, error_type: str | None = None, since: str | None = None,
                    limit: int = 50, cursor: str | None = None, all_tenants: bool = False) -> dict[str, Any]:
        query = {"kind": kind, "error_type": error_type, "since": since, "limit": limit, "cursor": cursor,
                 "all_tenants": "true" if all_tenants else None}
        return self.request("GET", "/v1/review", params={k: v for k, v in query.items() if v is not None})

    def review_requeue(self, job_id: str, params: dict[str, Any] | None = None,
                       priority: str | None = None) -> dict[str, Any]:
        body = {k: v for k, v in {"params": params, "priority": priority}.items() if v is not None}
        return self.request("POST", f"/v1/review/{job_id}/requeue", json=body)

    def review_dismiss(self, job_id: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/review/{job_id}/dismiss")

    def review_requeue_matching(self, kind: str | None = None, error_type: str | None = None,
                                since: str | None = None, all_tenants: bool = False) -> dict[str, Any]:
        body = {k: v for k, v in {"kind": kind, "error_type": error_type, "since": since}.items() if v is not None}
        return self.request("POST", "/v1/review:requeue", json=body | {"all_tenants": all_tenants})

    def events(self, job_id: str, read_timeout: float = 60.0, last_event_id: str | None = None) -> Iterator[SseEvent]:
        """The job's Server-Sent Events until the server ends the stream (after a terminal
        status, or after the stream's lifetime: then reconnect with ``last_event_id``).

        The server sends a keep-alive comment every ``RF_SSE_KEEPALIVE_S`` (15 s by
        default), so a longer read timeout means the connection is gone."""
        timeout = httpx.Timeout(10.0, read=read_timeout)
        headers = {"Accept": "text/event-stream"} | ({"Last-Event-ID": last_event_id} if last_event_id else {})
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/events", timeout=timeout,
                                   headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from_response(response)
                yield from iter_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.base_url, _reason(exc)) from None

    # -- farm -------------------------------------------------------------------

    def queues(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/queues")

    def pause(self, queue: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/queues/{queue}/pause")

    def resume(self, queue: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/queues/{queue}/resume")

    def pools(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/pools")

    def set_pool(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        """PATCH /v1/pools/{name}; ``pinned_replicas: None`` clears the pin."""
        return self.request("PATCH", f"/v1/pools/{name}", json=changes)

    def workers(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/workers")

    def kinds(self) -> list[dict[str, Any]]:
        return self.request("GET", "/v1/kinds")

    def status(self) -> dict[str, Any]:
        return self.request("GET", "/v1/status")


def _reason(exc: httpx.TransportError) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
