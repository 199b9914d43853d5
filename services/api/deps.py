"""Shared request dependencies.

They are ``async`` on purpose: a plain ``def`` dependency costs a thread hop per
request, and these only read app state.
"""

from __future__ import annotations

from fastapi import Depends, Request

from renderfarm.api.auth import require_tenant
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobStore


async def store(request: Request) -> JobStore:
    return request.app.state.store


async def settings(request: Request) -> Settings:
    return request.app.state.settings


Tenant = Depends(require_tenant)


async def require_admin(tenant: str = Tenant) -> str:
    """Farm control (pools): the one place that decides who may steer the farm.

    Today every valid key may; once keys carry scopes this checks for ``admin``
    and answers 403 otherwise, and every admin route follows.
    """
    return tenant


Admin = Depends(require_admin)
