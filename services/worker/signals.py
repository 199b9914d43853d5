"""Per-process set-up: each pool child loads its workload (and models) once."""

from __future__ import annotations

import logging
import os

from celery.signals import task_postrun, task_prerun, worker_process_init, worker_ready

from renderfarm.core import tracing
from renderfarm.worker import gpu_memory

log = logging.getLogger("renderfarm.worker")


@worker_process_init.connect
def _warm_up(**_kwargs) -> None:
    from renderfarm.core.settings import get_settings
    from renderfarm.worker.workloads import pool_module

    from renderfarm.worker import recycling

    pool = os.environ.get("RF_POOL", "cpu")
    module = pool_module(pool)
    warm_up = getattr(module, "warm_up", None)
    started = None
    if warm_up is not None:
        started = warm_up(get_settings())
        log.info("pool %s: warm-up started in process %s", pool, os.getpid())
    # A process that replaces a recycled one takes no job before its model is warm.
    recycling.warm_before_jobs(pool, started)
    recycling.install_gpu_memory_check(pool, recycling.pool_limits(pool, get_settings()).max_gpu_memory_growth_mb)
    _publish_gpu_memory()


@worker_ready.connect
def _pool_started(**_kwargs) -> None:
    """Main process: the first pool processes are up; any forked from now on replaces one."""
    from renderfarm.worker import recycling

    recycling.mark_pool_started()


@task_postrun.connect
def _publish_gpu_memory(**_kwargs) -> None:
    try:
        gpu_memory.publish()
    except OSError as exc:  # a gauge, never a reason to fail the task
        log.warning("GPU memory not published: %s", exc)


# One span per run, in the trace the API's publish started (its traceparent header).
_runs: dict[str, tuple] = {}


@task_prerun.connect
def _start_run_span(task_id=None, task=None, args=None, **_kwargs) -> None:
    if not tracing.setup("renderfarm-worker"):
        return
    from opentelemetry import context
    from opentelemetry.trace import SpanKind

    request = task.request
    parent = tracing.extract({k: getattr(request, k, None) for k in ("traceparent", "tracestate")
                              if getattr(request, k, None)})
    kind = task.name.rsplit(".", 1)[-1]
    queue = (request.delivery_info or {}).get("routing_key", "")
    span = tracing.tracer().start_span(f"run {kind}", context=parent, kind=SpanKind.CONSUMER, attributes={
        "renderfarm.job_id": (args or [""])[0], "renderfarm.kind": kind, "renderfarm.queue": queue})
    token = context.attach(tracing.trace.set_span_in_context(span))
    _runs[task_id] = (span, token)


@task_postrun.connect
def _end_run_span(task_id=None, state=None, **_kwargs) -> None:
    entry = _runs.pop(task_id, None)
    if entry is None:
        return
    from opentelemetry import context

    span, token = entry
    span.set_attribute("renderfarm.celery_state", str(state))
    span.end()
    context.detach(token)
