"""The FastAPI application: ``uvicorn renderfarm.api.app:create_app --factory``."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

import redis.asyncio as redis_async
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from renderfarm import __version__
from renderfarm.api.auth import KeyRing
from renderfarm.api.errors import error_body, install_error_handlers
from renderfarm.api.metrics import ApiMetrics
from renderfarm.api.routers import farm, jobs, queues
from renderfarm.core.redis_conn import redis_client
from renderfarm.core.settings import Settings, get_settings
from renderfarm.core.store import JobStore


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    client = redis_client(settings)
    store = JobStore(client, retention_seconds=settings.retention_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        password = settings.redis_password.get_secret_value() if settings.redis_password else None
        app.state.async_redis = redis_async.Redis.from_url(settings.redis_url, password=password, decode_responses=True,
                                                           socket_connect_timeout=settings.redis_socket_timeout_s)
        yield
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
    app.state.keyring = KeyRing(settings, client)
    app.state.metrics = ApiMetrics(store)
    install_error_handlers(app)
    app.include_router(jobs.router)
    app.include_router(queues.router)
    app.include_router(farm.router)

    request_latency = app.state.metrics.requests

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        request_latency.labels(request.method, path, str(response.status_code)).observe(time.perf_counter() - started)
        return response

    @app.get("/healthz", tags=["health"], summary="Liveness")
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], summary="Readiness: the job store answers")
    def readyz() -> Response:
        try:
            client.ping()
        except Exception as exc:
            import json

            return Response(json.dumps(error_body("unavailable", "Redis is not reachable", str(exc)[:200])),
                            status_code=503, media_type="application/json")
        return Response('{"status":"ready"}', media_type="application/json")

    @app.get("/metrics", tags=["health"], summary="Prometheus metrics")
    def metrics() -> Response:
        return Response(generate_latest(app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
