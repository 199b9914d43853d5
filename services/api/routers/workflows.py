"""/v1/workflows: submit (template or DAG), read, list, cancel, retry, event stream;
/v1/workflow-templates: the registered templates."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from renderfarm.api import sse
from renderfarm.api.deps import AnyKey, Tenant
from renderfarm.api.errors import ApiError, error_responses
from renderfarm.api.workflow_schemas import (
    SubmitWorkflowRequest,
    TemplateName,
    TemplateStepOut,
    WorkflowOut,
    WorkflowPageOut,
    WorkflowTemplateOut,
)
from renderfarm.core import workflows as wf
from renderfarm.core.inputs import InputError, validate_input
from renderfarm.core.settings import Settings
from renderfarm.core.store import body_fingerprint
from renderfarm.core.workflow_estimates import for_flow
from renderfarm.core.store import events_channel as job_events_channel
from renderfarm.core.workflow_store import (
    IdempotencyConflict,
    WorkflowConflict,
    WorkflowNotFound,
    WorkflowRecord,
    WorkflowStore,
    events_channel,
)
from renderfarm.core.workflow_templates import TEMPLATES, get_template

router = APIRouter(prefix="/v1/workflows", tags=["workflows"], responses=error_responses(401, 403, 503))
templates_router = APIRouter(prefix="/v1/workflow-templates", tags=["workflows"],
                             responses=error_responses(401, 403, 503))


def _workflows(request: Request) -> WorkflowStore:
    return request.app.state.workflows


def _not_found(workflow_id: str) -> ApiError:
    return ApiError(404, "not_found", f"workflow {workflow_id} not found")


def _get(store: WorkflowStore, workflow_id: str, tenant: str) -> WorkflowRecord:
    """Another tenant's workflow answers exactly like one that does not exist."""
    try:
        record = store.get(workflow_id)
    except WorkflowNotFound:
        raise _not_found(workflow_id) from None
    if record.tenant != tenant:
        raise _not_found(workflow_id)
    return record


def view(store: WorkflowStore, record: WorkflowRecord) -> WorkflowOut:
    jobs = store.job_progress(record)
    flow = record.flow
    estimate = for_flow(store.store, flow)
    steps = []
    for step in flow.spec.steps:
        state = flow.steps[step.name]
        job_status, job_progress = jobs.get(state.job_id or "", (None, 0.0))
        step_progress = 100.0 if state.status == wf.StepStatus.succeeded else \
            job_progress if state.status == wf.StepStatus.started else 0.0
        steps.append({"name": step.name, "kind": step.kind, "needs": step.needs, "status": state.status,
                      "job_id": state.job_id, "job_status": job_status, "progress": step_progress,
                      "outputs": state.outputs, "previous_jobs": state.previous_jobs, "error": state.error,
                      "estimated_duration_s": estimate.steps.get(step.name)})
    return WorkflowOut(id=record.id, status=record.status, template=record.template or None, input=flow.spec.input,
                       failure_policy=flow.spec.failure_policy, priority=flow.spec.priority,
                       progress=wf.progress(flow, lambda job_id: jobs.get(job_id, (None, 0.0))[1]),
                       steps=steps, labels=record.labels, created_at=record.created_at,
                       updated_at=record.updated_at, estimated_duration_s=estimate.estimated_duration_s,
                       estimated_remaining_s=estimate.estimated_remaining_s)


def _field_errors(exc: ValidationError, prefix: str) -> list[dict]:
    return [{"field": ".".join([prefix, *(str(p) for p in err.get("loc", ()))]), "message": err.get("msg", ""),
             "type": err.get("type", "")} for err in exc.errors()]


def _spec_of(body: SubmitWorkflowRequest) -> wf.WorkflowSpec:
    """The workflow spec a request asks for, or a 422 naming each field at fault."""
    if (body.template is None) == (body.steps is None):
        raise ApiError(422, "validation_error", "give a template or steps, not both and not neither",
                       [{"field": "template", "message": "give a template or steps"}])
    if body.template is not None:
        if body.input is None:
            raise ApiError(422, "validation_error", "a template needs an input",
                           [{"field": "input", "message": "required with a template"}])
        params = dict(body.params)
        if body.failure_policy is not None:
            params["failure_policy"] = body.failure_policy.value
        try:
            return get_template(body.template.value).build(body.input, params, priority=body.priority.value)
        except ValidationError as exc:
            raise ApiError(422, "validation_error", "template params are not valid",
                           _field_errors(exc, "params")) from None
    if body.params:
        raise ApiError(422, "validation_error", "params go on each step of a DAG",
                       [{"field": "params", "message": "only with a template"}])
    spec = wf.WorkflowSpec(input=body.input, steps=body.steps or [], priority=body.priority,
                           failure_policy=body.failure_policy or wf.FailurePolicy.fail_fast)
    errors = wf.validate_spec(spec)
    if errors:
        raise ApiError(422, "invalid_workflow", f"the workflow is not valid: {errors[0]['message']}", errors)
    return spec


def _check_inputs(spec: wf.WorkflowSpec, settings: Settings) -> None:
    """The media a client names (not step outputs) follow the same rules as a job's input."""
    named = [("input", spec.input)] if spec.input is not None else []
    named += [(f"steps.{i}.input", step.input) for i, step in enumerate(spec.steps) if isinstance(step.input, str)]
    errors = []
    for field, uri in named:
        try:
            validate_input(uri, roots=settings.input_roots, allow_private=settings.allow_private_fetch)
        except InputError as exc:
            errors.append({"field": field, "message": str(exc)})
    if errors:
        raise ApiError(422, "invalid_input", errors[0]["message"], errors)


@router.post("", status_code=202, response_model=WorkflowOut, summary="Submit a workflow (a template or a DAG)",
             responses=error_responses(400, 409, 422))
def submit_workflow(
    body: SubmitWorkflowRequest,
    request: Request,
    response: Response,
    idempotency_key: str | None = Header(default=None, alias="Idempotency-Key", max_length=255),
    tenant: str = Tenant,
) -> WorkflowOut:
    """Steps are ordinary jobs on their pools' queues; the roots start now, each other
    step when everything it needs has succeeded, with references to earlier steps'
    outputs replaced by their URIs."""
    spec = _spec_of(body)
    _check_inputs(spec, request.app.state.settings)
    store = _workflows(request)
    fingerprint = body_fingerprint(body.model_dump(mode="json")) if idempotency_key else ""
    try:
        record, created = store.submit(spec, tenant=tenant, template=body.template.value if body.template else "",
                                       labels=body.labels, idempotency_key=idempotency_key, body_hash=fingerprint)
    except IdempotencyConflict as exc:
        raise ApiError(409, "idempotency_conflict", str(exc), {"workflow_id": exc.workflow_id}) from None
    response.headers["Location"] = f"/v1/workflows/{record.id}"
    if not created:
        response.headers["Idempotent-Replayed"] = "true"
    return view(store, record)


@router.get("", response_model=WorkflowPageOut, summary="List this tenant's workflows newest first",
            responses=error_responses(400, 422))
def list_workflows(
    request: Request,
    status: wf.WorkflowStatus | None = None,
    template: TemplateName | None = None,
    limit: int = Query(default=50, ge=1, le=200),
    cursor: str | None = Query(default=None, max_length=512),
    tenant: str = Tenant,
) -> WorkflowPageOut:
    store = _workflows(request)
    try:
        page = store.list(tenant=tenant, status=status, template=template.value if template else None, limit=limit,
                          cursor=cursor)
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    return WorkflowPageOut(workflows=[view(store, record) for record in page.workflows], next_cursor=page.next_cursor)


@router.get("/{workflow_id}", response_model=WorkflowOut, summary="One workflow: status, steps and their jobs",
            responses=error_responses(404, 422))
def get_workflow(workflow_id: str, request: Request, tenant: str = Tenant) -> WorkflowOut:
    store = _workflows(request)
    return view(store, _get(store, workflow_id, tenant))


@router.post("/{workflow_id}/cancel", status_code=202, response_model=WorkflowOut, summary="Cancel a workflow",
             responses=error_responses(404, 409, 422))
def cancel_workflow(workflow_id: str, request: Request, tenant: str = Tenant) -> WorkflowOut:
    """Pending steps never run; running steps' jobs are cancelled (they stop)."""
    store = _workflows(request)
    _get(store, workflow_id, tenant)
    try:
        return view(store, store.cancel(workflow_id))
    except WorkflowConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None


@router.post("/{workflow_id}/retry", status_code=202, response_model=WorkflowOut,
             summary="Re-run the failed, cancelled and skipped steps (succeeded outputs are kept)",
             responses=error_responses(404, 409, 422))
def retry_workflow(workflow_id: str, request: Request, tenant: str = Tenant) -> WorkflowOut:
    store = _workflows(request)
    _get(store, workflow_id, tenant)
    try:
        return view(store, store.retry(workflow_id))
    except WorkflowConflict as exc:
        raise ApiError(409, "conflict", str(exc)) from None


@router.get("/{workflow_id}/events", summary="The workflow and its steps' progress as Server-Sent Events",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}} | error_responses(404, 422))
async def workflow_events(
    workflow_id: str,
    request: Request,
    last_event_id: str | None = Header(default=None, alias="Last-Event-ID", max_length=128),
    tenant: str = Tenant,
) -> StreamingResponse:
    """``workflow`` events carry the whole workflow (on every change: a step started or
    ended) with an ``id`` naming that version, ``progress`` events a step job's progress
    with its ``step``. The stream ends after the workflow ends or after
    ``RF_SSE_MAX_LIFETIME_S``; reconnect with ``Last-Event-ID``: the stream starts with
    the current workflow unless that is the version already seen (a finished workflow's
    state is always sent)."""
    store = _workflows(request)
    settings: Settings = request.app.state.settings
    await asyncio.to_thread(_get, store, workflow_id, tenant)
    async_redis = request.app.state.async_redis
    loop = asyncio.get_running_loop()

    async def stream():
        pubsub = async_redis.pubsub()
        await pubsub.subscribe(events_channel(workflow_id))
        watched: dict[str, str] = {}  # job channel -> step
        try:
            yield sse.retry()
            ends_at = loop.time() + settings.sse_max_lifetime_s
            last_sent = loop.time()
            changed = True
            while True:
                if changed:
                    record = await asyncio.to_thread(store.get, workflow_id)
                    current = await asyncio.to_thread(view, store, record)
                    for state_name, state in record.flow.steps.items():
                        channel = job_events_channel(state.job_id) if state.job_id else None
                        if channel and channel not in watched:
                            watched[channel] = state_name
                            await pubsub.subscribe(channel)
                    event_id = f"{record.id}-{record.version}"
                    terminal = record.status in wf.TERMINAL_WORKFLOW
                    if terminal or event_id != last_event_id:
                        yield sse.event("workflow", current.model_dump_json(), event_id)
                        last_sent = loop.time()
                    if terminal:
                        return
                    changed = False
                if await request.is_disconnected():
                    return
                now = loop.time()
                if now >= ends_at:
                    yield sse.comment("stream lifetime reached; reconnect")
                    return
                wait = min(1.0, ends_at - now, max(0.0, last_sent + settings.sse_keepalive_s - now))
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)
                if message is None:
                    if loop.time() - last_sent >= settings.sse_keepalive_s:
                        last_sent = loop.time()
                        yield sse.comment("keep-alive")
                    continue
                if message["channel"] == events_channel(workflow_id):
                    changed = True
                    continue
                step = watched.get(message["channel"])
                data = json.loads(message["data"]) | {"step": step}
                last_sent = loop.time()
                yield sse.event("progress", json.dumps(data))
        finally:
            await pubsub.aclose()

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@templates_router.get("", response_model=list[WorkflowTemplateOut], summary="Registered workflow templates",
                      dependencies=[AnyKey])
def list_templates() -> list[WorkflowTemplateOut]:
    out = []
    for template in TEMPLATES.values():
        spec = template.build("file:///input")
        out.append(WorkflowTemplateOut(
            name=template.name, description=template.description,
            params_schema=template.params_model.model_json_schema(),
            steps=[TemplateStepOut(name=s.name, kind=s.kind, needs=s.needs) for s in spec.steps],
            left_out=template.left_out()))
    return out
