"""Object storage for clients: presigned uploads and output downloads.

``POST /v1/uploads`` hands out a presigned PUT for a new key in the tenant's
prefix (large media never streams through the API); the client then submits a
job with that ``s3://`` input. ``GET /v1/jobs/{id}/outputs/{name}`` redirects to
a freshly signed GET of one output. Both need ``RF_STORAGE_BACKEND=s3``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field

from renderfarm.api.deps import Tenant
from renderfarm.api.errors import ApiError, error_responses
from renderfarm.core.storage import StorageError, get_storage_settings, presign_output, upload_target
from renderfarm.core.store import JobNotFound, JobStore

router = APIRouter(tags=["storage"], responses=error_responses(401, 403, 503))


class UploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    filename: str = Field(min_length=1, max_length=200, description="Kept (made safe) as the key's last part")
    media_type: str | None = Field(default=None, max_length=200,
                                   description="If given, the PUT must send this Content-Type")


class UploadTarget(BaseModel):
    uri: str = Field(description="Submit jobs with this input once the PUT succeeded")
    url: str = Field(description="Presigned URL: PUT the bytes here")
    method: str = "PUT"
    headers: dict[str, str] = Field(default_factory=dict, description="Headers the PUT must carry")
    expires_at: datetime


def _s3_only(what: str) -> None:
    if not get_storage_settings().s3_enabled:
        raise ApiError(409, "storage_not_s3", f"{what} needs object storage (RF_STORAGE_BACKEND=s3); "
                                              "this farm keeps media on its filesystem")


@router.post("/v1/uploads", status_code=201, response_model=UploadTarget,
             summary="A presigned PUT for a new input object in this tenant's prefix",
             responses=error_responses(400, 409, 422))
def create_upload(body: UploadRequest, tenant: str = Tenant) -> UploadTarget:
    _s3_only("uploads")
    ref, url, expires_at, headers = upload_target(tenant, body.filename, body.media_type)
    return UploadTarget(uri=ref.uri, url=url, headers=headers, expires_at=expires_at)


@router.get("/v1/jobs/{job_id}/outputs/{name}", status_code=307, response_class=RedirectResponse,
            summary="Redirect to a fresh presigned URL of one output",
            responses={307: {"description": "Location: a presigned GET of the output"}}
            | error_responses(404, 409, 422))
async def get_output(job_id: str, name: str, request: Request, tenant: str = Tenant) -> RedirectResponse:
    try:
        job = await JobStore.get_async(request.app.state.async_redis, job_id)
    except JobNotFound:
        job = None
    if job is None or job.tenant != tenant:
        raise ApiError(404, "not_found", f"job {job_id} not found")
    output = next((o for o in (job.result.outputs if job.result else []) if o.name == name), None)
    if output is None:
        raise ApiError(404, "not_found", f"job {job_id} has no output {name!r}")
    try:
        signed = await asyncio.to_thread(presign_output, output)
    except StorageError as exc:
        raise ApiError(503, "storage_unavailable", str(exc)) from None
    if signed is None:
        raise ApiError(409, "storage_not_s3", f"output {name!r} is on the worker's filesystem ({output.uri}); "
                                              "it has no URL")
    return RedirectResponse(signed[0], status_code=307, headers={"Cache-Control": "no-store"})
