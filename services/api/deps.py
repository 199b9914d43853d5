"""Shared request dependencies.

They are ``async`` on purpose: a plain ``def`` dependency costs a thread hop per
request, and these only read app state.
"""

from __future__ import annotations

from fastapi import Depends, Request

from renderfarm.api.auth import require_admin, require_jobs, require_key
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobStore


async def store(request: Request) -> JobStore:
    return request.app.state.store


async def settings(request: Request) -> Settings:
    return request.app.state.settings


# The tenant of a key with the ``jobs`` scope: every job route works inside it.
Tenant = Depends(require_jobs)
# Any valid key (farm-wide facts that hold no tenant's data: kinds, queue depth, status).
AnyKey = Depends(require_key)
# A key with the ``admin`` scope: queue control, workers, farm-wide stats.
Admin = Depends(require_admin)
