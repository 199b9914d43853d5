"""Shared request dependencies."""

from __future__ import annotations

from fastapi import Depends, Request

from renderfarm.api.auth import require_tenant
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobStore


def store(request: Request) -> JobStore:
    return request.app.state.store


def settings(request: Request) -> Settings:
    return request.app.state.settings


Tenant = Depends(require_tenant)
