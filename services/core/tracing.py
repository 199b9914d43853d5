"""OpenTelemetry tracing: one trace per job, from the API request through the
publish and the worker's run to the ffmpeg step.

Configured only by the standard ``OTEL_*`` variables. Without
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) no SDK is set up:
the API's tracer is OpenTelemetry's no-op and a span costs a function call.
The trace context travels in the Celery message as a W3C ``traceparent`` header.
Until ``setup`` has installed the SDK in this process, ``span`` and ``inject`` do
not touch OpenTelemetry at all (its no-op path still costs context switches).
"""

from __future__ import annotations

import os
import threading
from contextlib import nullcontext

from opentelemetry import context, propagate, trace

_lock = threading.Lock()
_configured_pid: int | None = None
_active = False  # the SDK is set up in this process


def enabled() -> bool:
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def setup(service_name: str) -> bool:
    """Install the SDK with an OTLP/HTTP exporter in this process (once per process:
    a forked pool child needs its own exporter thread). False when tracing is off."""
    global _configured_pid, _active
    if _configured_pid == os.getpid():
        return _active
    if not enabled():
        _configured_pid, _active = os.getpid(), False
        return False
    with _lock:
        if _configured_pid == os.getpid():
            return True
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace._TRACER_PROVIDER_SET_ONCE._done = False  # noqa: SLF001 - a forked child replaces its parent's provider
        trace.set_tracer_provider(provider)
        _configured_pid, _active = os.getpid(), True
        return True


def tracer() -> trace.Tracer:
    return trace.get_tracer("renderfarm")


def span(name: str, **kwargs):
    """A span made current for the ``with`` block; a do-nothing one while tracing is off."""
    if not _active:
        return nullcontext(trace.INVALID_SPAN)
    return tracer().start_as_current_span(name, **kwargs)


def inject() -> dict[str, str]:
    """The current context as headers (``traceparent``); empty when nothing is traced."""
    if not _active:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def extract(headers: dict | None) -> context.Context:
    return propagate.extract(headers or {})


def traced(name: str):
    """Run the decorated function in a span named ``name`` (a child of the current one)."""
    from functools import wraps

    def decorate(fn):
        @wraps(fn)
        def wrapper(*args, **kwargs):
            if not _active:
                return fn(*args, **kwargs)
            with tracer().start_as_current_span(name):
                return fn(*args, **kwargs)

        return wrapper

    return decorate


def current_traceparent() -> str:
    """The current span's context as a W3C ``traceparent`` ('' when nothing is traced)."""
    return inject().get("traceparent", "")


def mark_attempt(attempt: int, previous_traceparent: str = "") -> None:
    """Tag the current (run) span with its attempt number and link it to the span the
    job's previous attempt ran in: a retry or requeue is a new span, not a child of
    the old one, and the link keeps the attempts connected."""
    if not _active:
        return
    current = trace.get_current_span()
    current.set_attribute("renderfarm.attempt", attempt)
    if previous_traceparent:
        previous = trace.get_current_span(extract({"traceparent": previous_traceparent})).get_span_context()
        if previous.is_valid:
            current.add_link(previous, {"renderfarm.link": "previous_attempt"})


def requeue_headers() -> dict[str, str]:
    """Trace headers for the message that re-runs the job of the current run: the run
    span's own parent (the API's publish), so the next attempt is a sibling of this one
    in the job's trace (and links back to it); {} while nothing is traced."""
    if not _active:
        return {}
    current = trace.get_current_span()
    parent = getattr(current, "parent", None)  # SDK spans know their parent's context
    target = parent if parent is not None and parent.is_valid else current.get_span_context()
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(target)))
    return carrier
