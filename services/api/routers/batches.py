"""Batch submit: ``POST /v1/jobs:batch`` (up to 1,000 jobs, all or none) and ``GET /v1/batches/{id}``."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from pydantic import BaseModel, Field

from renderfarm.api.deps import Tenant, settings, store
from renderfarm.api.errors import ApiError, error_responses
from renderfarm.api.schemas import SubmitJobRequest
from renderfarm.api.submit_checks import submit_problems
from renderfarm.core import tracing
from renderfarm.core.jobs import JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.settings import Settings
from renderfarm.core.store import BatchNotFound, IdempotencyConflict, JobStore, body_fingerprint, new_job_id
from renderfarm.core.submit import job_message, new_job

MAX_BATCH = 1000

router = APIRouter(tags=["batches"], responses=error_responses(401, 403, 503))


class BatchSubmitRequest(BaseModel):
    jobs: list[SubmitJobRequest] = Field(min_length=1, max_length=MAX_BATCH)  # type: ignore[valid-type]


class BatchOut(BaseModel):
    """A batch and a page of its job ids (submit order); ``counts`` by status, ``expired``
    for jobs whose record is past its retention."""

    id: str
    count: int
    created_at: float
    counts: dict[str, int]
    job_ids: list[str]
    next_cursor: str | None = None


def _not_found(batch_id: str) -> ApiError:
    return ApiError(404, "not_found", f"batch {batch_id} not found")


@router.post("/v1/jobs:batch", status_code=202, response_model=BatchOut, summary="Submit up to 1,000 jobs: all or none",
             responses=error_responses(400, 409, 422))
def submit_batch(
    body: BatchSubmitRequest,
    request: Request,
    response: Response,
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", max_length=255),
    tenant: str = Tenant,
    store_: JobStore = Depends(store),
    settings_: Settings = Depends(settings),
) -> BatchOut:
    """Every item is checked first; one invalid item refuses the whole batch (422, each
    problem with its item ``index`` and ``field``) and nothing is stored or queued."""
    problems = [problem | {"index": index, "field": f"jobs.{index}.{problem['field']}"}
                for index, item in enumerate(body.jobs) for problem in submit_problems(item, settings_, tenant)]
    # A chunked transcode is a workflow of its own, not one job of a batch.
    problems += [{"code": "invalid_params", "index": index, "field": f"jobs.{index}.params.chunking",
                  "message": "a chunked transcode is a workflow: submit it on its own (POST /v1/jobs)"}
                 for index, item in enumerate(body.jobs) if getattr(item.params, "chunking", None) not in (None, False)]
    if problems:
        raise ApiError(422, "invalid_batch", f"{len({p['index'] for p in problems})} of {len(body.jobs)} jobs are "
                       "invalid; nothing was submitted", problems)
    jobs, messages = [], []
    with tracing.span("submit_batch") as span:
        for item in body.jobs:
            kind = get_kind(item.kind)
            job = new_job(kind, input=item.input, params=item.params.model_dump(mode="json"), priority=item.priority,
                          webhook_url=str(item.webhook_url) if item.webhook_url else None, labels=item.labels,
                          tenant=tenant)
            jobs.append(job)
            messages.append(job_message(kind, job, trace_headers=tracing.inject()))
        batch_id = new_job_id()
        span.set_attributes({"rf.batch_id": batch_id, "rf.batch_size": len(jobs)})
        fingerprint = body_fingerprint(body.model_dump(mode="json")) if idempotency_key else ""
        try:
            stored_id, created = store_.submit_batch(batch_id, tenant, jobs, messages,
                                                     idempotency_key=idempotency_key, body_hash=fingerprint)
        except IdempotencyConflict as exc:
            raise ApiError(409, "idempotency_conflict", str(exc), {"batch_id": exc.job_id}) from None
    if created:
        for job in jobs:
            request.app.state.metrics.submitted(job.kind, job.priority.value)
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/batches/{stored_id}"
    return _view(store_, stored_id, tenant, 0, MAX_BATCH)


@router.get("/v1/batches/{batch_id}", response_model=BatchOut, summary="A batch: counts by status, its job ids",
            responses=error_responses(400, 404, 422))
def get_batch(
    batch_id: str,
    limit: int = Query(default=100, ge=1, le=MAX_BATCH),
    cursor: str | None = Query(default=None, max_length=16),
    tenant: str = Tenant,
    store_: JobStore = Depends(store),
) -> BatchOut:
    if cursor is not None and not (cursor.isdigit() and int(cursor) < MAX_BATCH):
        raise ApiError(400, "bad_request", "invalid cursor")
    return _view(store_, batch_id, tenant, int(cursor or 0), limit)


def _view(store_: JobStore, batch_id: str, tenant: str, offset: int, limit: int) -> BatchOut:
    try:
        record = store_.batch(batch_id)
    except BatchNotFound:
        raise _not_found(batch_id) from None
    if record.get("tenant") != tenant:  # another tenant's batch answers like one that does not exist
        raise _not_found(batch_id)
    every = store_.batch_job_ids(batch_id)
    counts = Counter(status or "expired" for status in store_.statuses(every))
    page = every[offset:offset + limit]
    more = offset + limit < len(every)
    return BatchOut(id=batch_id, count=int(record["count"]), created_at=float(record["created_at"]),
                    counts={status.value: counts.get(status.value, 0) for status in JobStatus} |
                    ({"expired": counts["expired"]} if counts.get("expired") else {}),
                    job_ids=page, next_cursor=str(offset + limit) if more else None)
