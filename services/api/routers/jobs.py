"""/v1/jobs: submit, read, list, cancel, retry, progress stream."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from opentelemetry.trace import SpanKind

from renderfarm.api import sse
from renderfarm.api.deps import Tenant, settings, store
from renderfarm.api.errors import ApiError, error_responses
from renderfarm.api.schemas import JobPage, KindName, SubmitJobRequest
from renderfarm.api.submit_checks import submit_problems
from renderfarm.core.jobs import TERMINAL_STATUSES, Job, JobStatus, ProgressEvent
from renderfarm.core.storage import delete_job_outputs
from renderfarm.core.kinds import get_kind
from renderfarm.core.storage import signed_outputs
from renderfarm.core.settings import Settings
from renderfarm.core.store import (
    IdempotencyConflict,
    JobNotFound,
    JobStore,
    TransitionConflict,
    body_fingerprint,
    events_channel,
)
from renderfarm.core import tracing
from renderfarm.core.submit import job_message, new_job
from renderfarm.core.chunked_transcode import TEMPLATE as CHUNKED_TEMPLATE, chunked_spec, chunking_of
from renderfarm.core.workflow_store import IdempotencyConflict as WorkflowIdempotencyConflict
from renderfarm.api.routers.workflows import view as workflow_view
from renderfarm.api.workflow_schemas import WorkflowOut
from renderfarm.api.job_views import with_estimates, with_estimates_async
from renderfarm.api.schemas import JobOut

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], responses=error_responses(401, 403, 503))


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, "not_found", f"job {job_id} not found")


def _owned(job: Job, tenant: str) -> Job:
    """Another tenant's job answers exactly like a job that does not exist."""
    if job.tenant != tenant:
        raise _not_found(job.id)
    return job


def _get(store_: JobStore, job_id: str, tenant: str) -> Job:
    try:
        return _owned(store_.get(job_id), tenant)
    except JobNotFound:
        raise _not_found(job_id) from None


@router.post("", status_code=202, response_model=Job | WorkflowOut,
             summary="Submit a job (a chunked transcode answers with its workflow)",
             responses=error_responses(400, 409, 422))
def submit_job(
    body: SubmitJobRequest,
    request: Request,
    response: Response,
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", max_length=255),
    tenant: str = Tenant,
    store_: JobStore = Depends(store),
    settings_: Settings = Depends(settings),
) -> Job:
    kind = get_kind(body.kind)
    if problems := submit_problems(body, settings_, tenant):  # the same checks as each item of a batch
        raise ApiError(422, problems[0]["code"], problems[0]["message"],
                       [{"field": p["field"], "message": p["message"]} for p in problems])
    if kind.name == "transcode" and (chunking := chunking_of(body.params, settings_.chunking_min_duration_s,
                                                             settings_.chunking_chunk_duration_s)) is not None:
        return _submit_chunked(body, chunking, request, response, idempotency_key, tenant)
    # FastAPI's own request span (when the SDK is set up) is this span's parent.
    with tracing.span("submit") as span:
        return _submit(body, kind, request, response, idempotency_key, tenant, store_, span)


def _submit(body: SubmitJobRequest, kind, request: Request, response: Response, idempotency_key: str | None,
            tenant: str, store_: JobStore, span) -> Job:
    params = body.params.model_dump(mode="json")
    job = new_job(
        kind,
        input=body.input,
        params=params,
        priority=body.priority,
        idempotency_key=idempotency_key,
        webhook_url=str(body.webhook_url) if body.webhook_url else None,
        labels=body.labels,
        tenant=tenant,
    )
    fingerprint = body_fingerprint(body.model_dump(mode="json")) if idempotency_key else ""
    span.set_attributes({"renderfarm.job_id": job.id, "renderfarm.kind": kind.name, "renderfarm.queue": job.queue, "renderfarm.attempt": 1})
    try:
        with tracing.span("publish", kind=SpanKind.PRODUCER, attributes={"renderfarm.job_id": job.id, "renderfarm.queue": job.queue}):
            message = job_message(kind, job, trace_headers=tracing.inject())
            stored, created = store_.submit(job, message, body_hash=fingerprint)
    except IdempotencyConflict as exc:
        raise ApiError(409, "idempotency_conflict", str(exc), {"job_id": exc.job_id}) from None
    request.app.state.metrics.submitted(kind.name, body.priority.value)
    response.headers["Location"] = f"/v1/jobs/{stored.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return stored


def _submit_chunked(body: SubmitJobRequest, chunking, request: Request, response: Response,
                    idempotency_key: str | None, tenant: str) -> WorkflowOut:
    """A chunked transcode is a ``chunked-transcode`` workflow: 202 with the workflow
    (Location: /v1/workflows/{id}), whose status view carries the outputs."""
    if body.webhook_url is not None:
        raise ApiError(422, "invalid_webhook", "a chunked transcode is a workflow, which has no webhook: follow "
                       "/v1/workflows/{id}/events", [{"field": "webhook_url", "message": "not with chunking"}])
    spec = chunked_spec(body.input, body.params, chunking, priority=body.priority.value)
    workflows = request.app.state.workflows
    fingerprint = body_fingerprint(body.model_dump(mode="json")) if idempotency_key else ""
    try:
        record, created = workflows.submit(spec, tenant=tenant, template=CHUNKED_TEMPLATE, labels=body.labels,
                                           idempotency_key=idempotency_key, body_hash=fingerprint)
    except WorkflowIdempotencyConflict as exc:
        raise ApiError(409, "idempotency_conflict", str(exc), {"workflow_id": exc.workflow_id}) from None
    response.headers["Location"] = f"/v1/workflows/{record.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return workflow_view(workflows, record)


@router.get("", response_model=JobPage, summary="List this tenant's jobs (history, active) newest first",
            responses=error_responses(400, 422))
def list_jobs(
    status: JobStatus | None = None,
    kind: KindName | None = None,
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = Query(default=None, max_length=512),
    tenant: str = Tenant,
    store_: JobStore = Depends(store),
) -> JobPage:
    try:
        page = store_.list(status=status, kind=kind.value if kind else None, limit=limit, cursor=cursor,
                           tenant=tenant)
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    # Fresh presigned URLs for s3:// outputs, as GET of one job gives (a local HMAC each, no request).
    jobs = [signed_outputs(job) for job in page.jobs]
    return JobPage(jobs=with_estimates(store_, jobs), next_cursor=page.next_cursor)


@router.get("/{job_id}", response_model=JobOut, summary="One job, with its duration estimates",
            responses=error_responses(404, 422))
async def get_job(job_id: str, request: Request, tenant: str = Tenant) -> JobOut:
    try:
        job = _owned(await JobStore.get_async(request.app.state.async_redis, job_id), tenant)
    except JobNotFound:
        raise _not_found(job_id) from None
    if job.result and any(o.uri.startswith("s3://") for o in job.result.outputs):
        job = await asyncio.to_thread(signed_outputs, job)  # fresh presigned URLs, never stored
    return await with_estimates_async(request.app.state.async_redis, request.app.state.store, job)


@router.post("/{job_id}/cancel", status_code=202, response_model=Job, summary="Cancel a job",
             responses=error_responses(404, 409, 422))
def cancel_job(job_id: str, tenant: str = Tenant, store_: JobStore = Depends(store)) -> Job:
    """A queued job never runs; a running job is stopped and ends ``cancelled``."""
    _get(store_, job_id, tenant)
    try:
        job = store_.transition(job_id, JobStatus.cancelled, fields={
            "finished_at": datetime.now(timezone.utc), "stage": "cancelled", "message": "cancelled by request",
        })
    except JobNotFound:
        raise _not_found(job_id) from None
    except TransitionConflict as exc:
        raise ApiError(409, "conflict", f"job is {exc.current}; only queued, running or retrying jobs can be cancelled") from None
    return job


@router.post("/{job_id}/retry", status_code=202, response_model=Job, summary="Re-run a failed or cancelled job",
             responses=error_responses(404, 409, 422))
def retry_job(job_id: str, tenant: str = Tenant, store_: JobStore = Depends(store)) -> Job:
    job = _get(store_, job_id, tenant)
    if (workflow := store_.workflow_of(job_id)) is not None:
        # Its workflow would not see the new run: the workflow's retry runs the step again.
        raise ApiError(409, "conflict", f"job is a step of workflow {workflow}: retry the workflow",
                       {"workflow_id": workflow})
    kind = get_kind(job.kind)
    try:
        job = store_.transition(
            job_id,
            JobStatus.queued,
            fields={"error": None, "result": None, "progress": 0, "stage": "", "message": "retried by request",
                    "started_at": None, "finished_at": None, "worker": None},
            # The re-run is traced in this request's trace; its run links to the last attempt.
            requeue_message=job_message(kind, job, trace_headers=tracing.inject()),
            requeue_queue=job.queue,
        )
    except TransitionConflict as exc:
        raise ApiError(409, "conflict", f"job is {exc.current}; only failed or cancelled jobs can be retried") from None
    return job


@router.get("/{job_id}/events", summary="Progress as Server-Sent Events (resumable with Last-Event-ID)",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}} | error_responses(404, 422))
async def job_events(
    job_id: str,
    request: Request,
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID", max_length=64),
    tenant: str = Tenant,
) -> StreamingResponse:
    """``job`` events carry the whole job, ``progress`` events a ProgressEvent; each has
    an ``id`` naming the state it carries. Comments keep an idle connection alive. The
    stream ends after a terminal status or after ``RF_SSE_MAX_LIFETIME_S``; reconnect
    with ``Last-Event-ID`` to go on (a finished job's final state is always sent)."""
    store_: JobStore = request.app.state.store
    settings_: Settings = request.app.state.settings
    await asyncio.to_thread(_get, store_, job_id, tenant)
    async_redis = request.app.state.async_redis
    loop = asyncio.get_running_loop()

    async def stream():
        pubsub = async_redis.pubsub()
        await pubsub.subscribe(events_channel(job_id))
        try:
            yield sse.retry()
            # Subscribe first, then send the current state: no event falls in between.
            current = await asyncio.to_thread(store_.get, job_id)
            current_id = sse.state_id(current.status, current.progress, current.stage, current.message)
            terminal = current.status in TERMINAL_STATUSES
            if terminal or current_id != last_event_id:
                yield sse.event("job", current.model_dump_json(), current_id)
            if terminal:
                return
            ends_at = loop.time() + settings_.sse_max_lifetime_s
            last_sent = loop.time()
            while not await request.is_disconnected():
                now = loop.time()
                if now >= ends_at:
                    yield sse.comment("stream lifetime reached; reconnect with Last-Event-ID")
                    return
                wait = min(1.0, ends_at - now, max(0.0, last_sent + settings_.sse_keepalive_s - now))
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                if message is None:
                    if loop.time() - last_sent >= settings_.sse_keepalive_s:
                        last_sent = loop.time()
                        yield sse.comment("keep-alive")
                    continue
                last_sent = loop.time()
                event = ProgressEvent.model_validate_json(message["data"])
                yield sse.event("progress", message["data"],
                                sse.state_id(event.status, event.progress, event.stage, event.message))
                if event.status in TERMINAL_STATUSES:
                    final = await asyncio.to_thread(store_.get, job_id)
                    yield sse.event("job", final.model_dump_json(),
                                    sse.state_id(final.status, final.progress, final.stage, final.message))
                    return
        finally:
            await pubsub.unsubscribe()
            await pubsub.aclose()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# --- delete ---------------------------------------------------------------------------


@router.delete("/{job_id}", status_code=204, summary="Delete a finished job and its outputs (a queued one is cancelled first)",
               response_class=Response, responses=error_responses(404, 409, 422))
def delete_job(job_id: str, tenant: str = Tenant, store_: JobStore = Depends(store),
               settings_: Settings = Depends(settings)) -> Response:
    """A running job is 409: cancel it, wait for ``cancelled``, then delete. Afterwards
    the job is 404 everywhere (a second delete too)."""
    job = _get(store_, job_id, tenant)
    if (workflow := store_.workflow_of(job_id)) is not None:
        # Its workflow would wait forever for a step whose record is gone.
        raise ApiError(409, "conflict", f"job is a step of workflow {workflow}; it goes when its workflow expires",
                       {"workflow_id": workflow})
    if job.status in (JobStatus.queued, JobStatus.retrying):
        try:
            job = store_.transition(job_id, JobStatus.cancelled, fields={
                "finished_at": datetime.now(timezone.utc), "stage": "cancelled", "message": "cancelled to be deleted",
            })
        except TransitionConflict:
            job = _get(store_, job_id, tenant)  # it started meanwhile: the check below answers
    if job.status not in TERMINAL_STATUSES:
        raise ApiError(409, "conflict", f"job is {job.status.value}; cancel it and wait for it to end, then delete it")
    # Outputs first: a failure here leaves the record, and the delete can be repeated.
    delete_job_outputs(job.id, job.tenant, outputs_dir=settings_.outputs_dir)
    try:
        store_.delete(job_id, tenant=tenant)
    except JobNotFound:
        raise _not_found(job_id) from None
    except TransitionConflict as exc:
        raise ApiError(409, "conflict", f"job is {exc.current}; it can be deleted once it has ended") from None
    return Response(status_code=204)
