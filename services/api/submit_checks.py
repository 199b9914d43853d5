"""The checks a submitted job passes beyond its schema (input reachable, webhook usable),
shared by single and batch submit. Each problem names its field."""

from __future__ import annotations

from typing import Any

from renderfarm.core.inputs import InputError, check_http_url, validate_input
from renderfarm.core.settings import Settings


def submit_problems(body: Any, settings: Settings, tenant: str) -> list[dict[str, str]]:
    """``[{"code", "field", "message"}]`` for one validated submit body; empty when it may be stored."""
    problems = []
    try:
        validate_input(body.input, roots=settings.input_roots, allow_private=settings.allow_private_fetch,
                       tenant=tenant)
    except InputError as exc:
        problems.append({"code": "invalid_input", "field": "input", "message": str(exc)})
    if body.webhook_url is not None:
        if not settings.webhook_secret:
            problems.append({"code": "invalid_webhook", "field": "webhook_url",
                             "message": "webhooks are signed: set RF_WEBHOOK_SECRET on the API and beat first"})
        else:
            try:
                check_http_url(str(body.webhook_url), allow_private=settings.allow_private_fetch)
            except InputError as exc:
                problems.append({"code": "invalid_webhook", "field": "webhook_url", "message": str(exc)})
    return problems
