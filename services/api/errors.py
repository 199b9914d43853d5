"""Errors as JSON ``{"error": {"code", "message", "details"}}`` with the right status."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_body(code: str, message: str, details: Any = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """Every error the API answers with, whatever its status."""

    error: ErrorDetail


_ERROR_DESCRIPTIONS = {
    400: "Bad request: a body that is not JSON, or an unreadable cursor",
    401: "No API key, or not a valid one",
    403: "The API key lacks the scope this route needs",
    404: "Not found (another tenant's job is not found either)",
    409: "Conflicting state or idempotency key",
    422: "Invalid request: field errors in details",
    502: "The Kubernetes API answered with an unexpected error",
    503: "The job store (Redis) or the Kubernetes API is unavailable; retry later",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for error statuses, all with the error model."""
    return {status: {"model": ErrorResponse, "description": _ERROR_DESCRIPTIONS[status]} for status in statuses}


def _field_errors(exc: RequestValidationError) -> list[dict]:
    out = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ()) if part not in ("body",)]
        item = {"field": ".".join(loc), "message": err.get("msg", ""), "type": err.get("type", "")}
        raw_loc = tuple(err.get("loc", ()))
        if raw_loc[:2] == ("body", "jobs") and len(raw_loc) > 2 and isinstance(raw_loc[2], int):
            item["index"] = raw_loc[2]  # which job of a batch submit
        ctx = err.get("ctx") or {}
        if "expected_tags" in ctx:
            item["allowed"] = [tag.strip(" '") for tag in str(ctx["expected_tags"]).split(",")]
        elif err.get("type") == "enum" and "expected" in ctx:  # "'a', 'b' or 'c'"
            item["allowed"] = [part.strip(" '") for part in str(ctx["expected"]).replace(" or ", ",").split(",")]
        out.append(item)
    return out


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message, exc.details), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body("validation_error", "request is not valid", _field_errors(exc)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                401: "unauthorized"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("unavailable", "the job store (Redis) is unavailable; retry later", str(exc)[:200]),
                            status_code=503, headers={"Retry-After": "1"})
