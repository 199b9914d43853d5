"""The FastAPI application: ``uvicorn renderfarm.api.app:create_app --factory``."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

import redis.asyncio as redis_async
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from renderfarm import __version__
from renderfarm.api.auth import KeyRing
from renderfarm.api.errors import error_body, error_responses, install_error_handlers
from renderfarm.api.metrics import ApiMetrics
from renderfarm.api.routers import batches, farm, jobs, pools, queues, review, storage, workflows
from renderfarm.core.redis_conn import redis_client
from renderfarm.core.settings import Settings, get_settings
from renderfarm.core.store import JobStore
from renderfarm.core.workflow_store import WorkflowStore


class LatencyMiddleware:
    """Request latency by route template, as a plain ASGI middleware (the
    decorator-style middleware adds a task group and a stream to every request)."""

    def __init__(self, app, histogram):
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(scope["method"], route, str(status)).observe(time.perf_counter() - started)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    from renderfarm.core import tracing

    tracing.setup("renderfarm-api")  # only with OTEL_EXPORTER_OTLP_*ENDPOINT set
    client = redis_client(settings)
    store = JobStore(client, retention_seconds=settings.retention_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        password = settings.redis_password.get_secret_value() if settings.redis_password else None
        app.state.async_redis = redis_async.Redis.from_url(settings.redis_url, password=password, decode_responses=True,
                                                           socket_connect_timeout=settings.redis_socket_timeout_s,
                                                           socket_timeout=settings.redis_socket_timeout_s)
        app.state.keyring.start()
        yield
        app.state.keyring.stop()
        await app.state.async_redis.aclose()
        client.close()

    app = FastAPI(
        title="renderfarm",
        version=__version__,
        description="Submit media jobs (transcode, thumbnails, transcription, vision), watch them, manage queues.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.workflows = WorkflowStore(store)
    app.state.keyring = KeyRing(settings, client)
    app.state.metrics = ApiMetrics(store)
    install_error_handlers(app)
    app.include_router(jobs.router)
    app.include_router(batches.router)
    app.include_router(queues.router)
    app.include_router(farm.router)
    app.include_router(pools.router)
    app.include_router(review.router)
    app.include_router(review.bulk_router)
    app.include_router(workflows.router)
    app.include_router(workflows.templates_router)
    app.include_router(storage.router)

    app.add_middleware(LatencyMiddleware, histogram=app.state.metrics.requests)

    @app.get("/healthz", tags=["health"], summary="Liveness")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: the job store answers",
             responses=error_responses(503))
    def readyz() -> Response:
        try:
            client.ping()
        except Exception as exc:
            import json

            return Response(json.dumps(error_body("unavailable", "Redis is not reachable", str(exc)[:200])),
                            status_code=503, media_type="application/json")
        return Response('{"status":"ready"}', media_type="application/json")

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics",
             responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                              "description": "Prometheus text exposition format"}})
    def metrics() -> Response:
        return Response(generate_latest(app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
