"""/v1/review: jobs that failed for good, worked through by a person.

List (filters, cursor), requeue one (maybe with changed params or priority, with a
fresh retry budget), dismiss one (out of review, record kept), bulk requeue by
filter. Everything is inside the key's tenant; ``all_tenants`` needs ``admin``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Body, Depends, Query
from pydantic import BaseModel, Field, ValidationError

from renderfarm.api.auth import require_jobs_key
from renderfarm.api.deps import store
from renderfarm.api.errors import ApiError, error_responses
from renderfarm.api.schemas import KindName
from renderfarm.core import review
from renderfarm.core.apikeys import ApiKeyRecord, Scope
from renderfarm.core.jobs import ErrorType, Job
from renderfarm.core.queues import Priority
from renderfarm.core.store import JobNotFound, JobStore, NotInReview

router = APIRouter(prefix="/v1/review", tags=["review"], responses=error_responses(401, 403, 503))
Reviewer = Depends(require_jobs_key)


class ReviewItem(BaseModel):
    in_review_since: datetime
    job: Job


class ReviewPageOut(BaseModel):
    items: list[ReviewItem]
    next_cursor: str | None = None


class RequeueRequest(BaseModel):
    model_config = {"extra": "forbid"}

    params: dict[str, Any] | None = Field(default=None, description="new params, validated by the kind's params model")
    priority: Priority | None = None


class BulkRequeueRequest(BaseModel):
    model_config = {"extra": "forbid"}

    kind: KindName | None = None
    error_type: ErrorType | None = None
    since: datetime | None = None
    all_tenants: bool = Field(default=False, description="every tenant's jobs (needs the admin scope)")
    limit: int = Field(default=review.MAX_BULK, ge=1, le=review.MAX_BULK)


class BulkRequeueOut(BaseModel):
    requeued: list[str]
    count: int
    more: bool


def _scope(key: tuple[ApiKeyRecord, str], all_tenants: bool) -> tuple[review.Actor, str | None]:
    record, key_id = key
    if all_tenants and not record.allows(Scope.admin):
        raise ApiError(403, "forbidden", "all_tenants needs the 'admin' scope",
                       {"required_scope": "admin", "key_scopes": sorted(record.scopes)})
    return review.Actor(key_id=key_id, tenant=record.tenant), None if all_tenants else record.tenant


def _epoch(value: datetime | None) -> float | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "not_found", f"job {job_id} not found")


@router.get("", response_model=ReviewPageOut, summary="Jobs in manual review, newest failure first",
            responses=error_responses(400, 422))
def list_review(
    kind: KindName | None = None,
    error_type: ErrorType | None = None,
    since: datetime | None = Query(default=None, description="only jobs that entered review at or after this"),
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=512),
    all_tenants: bool = False,
    key=Reviewer,
    store_: JobStore = Depends(store),
) -> ReviewPageOut:
    _, tenant = _scope(key, all_tenants)
    try:
        page = store_.review_page(tenant=tenant, kind=kind.value if kind else None,
                                  error_type=error_type.value if error_type else None, since=_epoch(since),
                                  limit=limit, cursor=cursor)
    except (ValueError, OverflowError) as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    return ReviewPageOut(items=[ReviewItem(in_review_since=datetime.fromtimestamp(score, tz=timezone.utc), job=job)
                                for score, job in page.entries], next_cursor=page.next_cursor)


@router.post("/{job_id}/requeue", status_code=202, response_model=Job,
             summary="Run a job in review again (fresh retry budget), maybe with changed params or priority",
             responses=error_responses(400, 404, 409, 422))
def requeue_job(job_id: str, body: RequeueRequest | None = Body(default=None), key=Reviewer,
                store_: JobStore = Depends(store)) -> Job:
    actor, tenant = _scope(key, False)
    body = body or RequeueRequest()
    try:
        return review.requeue(store_, job_id, actor, tenant=tenant, params=body.params, priority=body.priority)
    except JobNotFound:
        raise _not_found(job_id) from None
    except NotInReview as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except review.StepOfWorkflow as exc:
        raise ApiError(409, "conflict", str(exc), {"workflow_id": exc.workflow_id}) from None
    except ValidationError as exc:
        details = [{"field": "params." + ".".join(str(p) for p in err["loc"]), "message": err["msg"],
                    "type": err["type"]} for err in exc.errors()]
        raise ApiError(422, "validation_error", "params are not valid for this kind", details) from None


@router.post("/{job_id}/dismiss", response_model=Job, summary="Take a job out of review; its record stays",
             responses=error_responses(404, 409, 422))
def dismiss_job(job_id: str, key=Reviewer, store_: JobStore = Depends(store)) -> Job:
    actor, tenant = _scope(key, False)
    try:
        return review.dismiss(store_, job_id, actor, tenant=tenant)
    except JobNotFound:
        raise _not_found(job_id) from None
    except NotInReview as exc:
        raise ApiError(409, "conflict", str(exc)) from None


# Registered on the app without the prefix: POST /v1/review:requeue
bulk_router = APIRouter(tags=["review"], responses=error_responses(401, 403, 503))


@bulk_router.post("/v1/review:requeue", response_model=BulkRequeueOut,
                  summary="Requeue every job in review that matches (e.g. one kind's transient errors after an outage)",
                  responses=error_responses(400, 422))
def bulk_requeue(body: BulkRequeueRequest, key=Reviewer, store_: JobStore = Depends(store)) -> BulkRequeueOut:
    actor, tenant = _scope(key, body.all_tenants)
    ids, more = review.requeue_matching(store_, actor, tenant=tenant, kind=body.kind.value if body.kind else None,
                                        error_type=body.error_type.value if body.error_type else None,
                                        since=_epoch(body.since), limit=body.limit)
    return BulkRequeueOut(requeued=ids, count=len(ids), more=more)
