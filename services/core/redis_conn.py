"""Redis connections with timeouts short enough to fail fast (never hang a request)."""

from __future__ import annotations

import redis

from renderfarm.core.settings import Settings


def redis_client(settings: Settings, *, socket_timeout_s: float | None = None) -> redis.Redis:
    timeout = settings.redis_socket_timeout_s if socket_timeout_s is None else socket_timeout_s
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    return redis.Redis.from_url(
        settings.redis_url,
        password=password,
        decode_responses=True,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        health_check_interval=30,
        # One quick retry on a dropped connection; a dead server must still fail fast.
        retry_on_timeout=False,
    )


def celery_broker_url(settings: Settings) -> str:
    """The broker URL with the password folded in, as kombu expects it."""
    if not settings.redis_password:
        return settings.redis_url
    from urllib.parse import quote, urlsplit, urlunsplit

    parts = urlsplit(settings.redis_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f":{quote(settings.redis_password.get_secret_value(), safe='')}@{host}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
