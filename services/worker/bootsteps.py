"""Worker-side loops that run in the Celery consumer's event loop.

- Pause: every second, consume exactly the pool's queues that are not paused,
  in strict priority order. The paused set lives in Redis, so a worker started
  after a pause honours it too.
- Heartbeat: the worker's name, pod, pool and queues, with a TTL; the API lists
  workers from it. Whether a job's run is alive is not read from here: each run
  renews a lease of its own (runner.Lease), which outlives these timers at warm
  shutdown.
- Due retries: move retries whose backoff has passed back onto their queues.
"""

from __future__ import annotations

import logging
import os

from celery import bootsteps

from renderfarm.core.queues import pool_queues
from renderfarm.core.settings import get_settings
from renderfarm.worker import gpu_memory, identity

log = logging.getLogger("renderfarm.worker")


def desired_consumption(pool_order: list[str], paused: set[str]) -> list[str]:
    """Pure: the queues to consume, highest priority first."""
    return [queue for queue in pool_order if queue not in paused]


def reconcile_plan(current: list[str], desired: list[str]) -> tuple[list[str], list[str]]:
    """Pure: (queues to cancel, queues to add, in order) turning ``current`` into ``desired``.

    kombu polls queues in the order they were added, so a resumed queue cannot be
    appended: everything after the first difference is cancelled and re-added.
    """
    common = 0
    while common < min(len(current), len(desired)) and current[common] == desired[common]:
        common += 1
    return current[common:], desired[common:]


def gpu_memory_families(pool: str, name: str, totals: list) -> list:
    """GPU memory gauges by device; none at all without CUDA (absent, not 0)."""
    from prometheus_client.core import GaugeMetricFamily

    if not totals:
        return []
    allocated = GaugeMetricFamily("renderfarm_worker_gpu_memory_allocated_bytes", "CUDA memory held by tensors "
                                  "in this worker's pool processes", labels=["pool", "worker", "device"])
    reserved = GaugeMetricFamily("renderfarm_worker_gpu_memory_reserved_bytes", "CUDA memory reserved by the "
                                 "caching allocator of this worker's pool processes", labels=["pool", "worker", "device"])
    for sample in totals:
        allocated.add_metric([pool, name, str(sample.device)], sample.allocated_bytes)
        reserved.add_metric([pool, name, str(sample.device)], sample.reserved_bytes)
    return [allocated, reserved]


def worker_registry(pool: str, name: str, consumer):
    """Worker metrics: up, busy (jobs running now) and concurrency, read at scrape time."""
    from celery.worker import state
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import GaugeMetricFamily

    class WorkerCollector:
        def collect(self):
            labels = [pool, name]
            for metric, help_text, value in (
                ("renderfarm_worker_up", "1 while this worker runs", 1),
                ("renderfarm_worker_busy", "Jobs this worker is running now", len(state.active_requests)),
                ("renderfarm_worker_concurrency", "Jobs this worker can run at once",
                 getattr(consumer.controller, "concurrency", 0) or 0),
            ):
                family = GaugeMetricFamily(metric, help_text, labels=["pool", "worker"])
                family.add_metric(labels, value)
                yield family
            yield from gpu_memory_families(pool, name, gpu_memory.totals(gpu_memory.samples_dir(os.getpid())))

    registry = CollectorRegistry()
    registry.register(WorkerCollector())
    return registry


class RenderfarmStep(bootsteps.StartStopStep):
    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.pool = os.environ.get("RF_POOL", "cpu")
        self.name_in_store = identity.worker_name(self.pool)
        self.timers = []
        self.concurrency = getattr(parent.controller, "concurrency", None) if hasattr(parent, "controller") else None

    def start(self, c):
        from renderfarm.worker.runner import job_store

        self.store = job_store()
        settings = get_settings()
        if settings.worker_metrics_port and not getattr(RenderfarmStep, "_metrics_started", False):
            from prometheus_client import start_http_server

            start_http_server(settings.worker_metrics_port, registry=worker_registry(self.pool, self.name_in_store, c))
            RenderfarmStep._metrics_started = True
        self._sync_queues(c)
        self._heartbeat(c)
        self.timers = [
            c.timer.call_repeatedly(1.0, self._sync_queues, (c,), priority=10),
            c.timer.call_repeatedly(settings.worker_heartbeat_s, self._heartbeat, (c,), priority=10),
            c.timer.call_repeatedly(1.0, self._promote_due, (), priority=10),
        ]

    def stop(self, c):
        for timer in self.timers:
            timer.cancel()
        self.timers = []

    def shutdown(self, c):
        self.stop(c)
        try:
            self.store.forget_worker(self.name_in_store)
        except Exception:  # Redis may be gone at shutdown; the heartbeat key expires anyway
            pass

    def _consuming(self, c) -> list[str]:
        if c.task_consumer is None:
            return []
        return [queue.name for queue in c.task_consumer.queues]

    def _sync_queues(self, c) -> None:
        try:
            paused = self.store.paused_queues()
        except Exception as exc:
            log.warning("cannot read paused queues: %s", exc)
            return
        desired = desired_consumption(pool_queues(self.pool), paused)
        current = self._consuming(c)
        to_cancel, to_add = reconcile_plan(current, desired)
        for queue in to_cancel:
            c.cancel_task_queue(queue)
        for queue in to_add:
            c.add_task_queue(queue)
        if to_cancel or to_add:
            log.info("consuming %s (paused: %s)", ",".join(desired) or "nothing", ",".join(sorted(paused)) or "none")

    def _heartbeat(self, c) -> None:
        settings = get_settings()
        try:
            self.store.heartbeat(
                self.name_in_store,
                {
                    "pool": self.pool,
                    "pod": identity.pod_name(),
                    "pid": str(os.getpid()),
                    "queues": ",".join(self._consuming(c)),
                    "concurrency": str(c.controller.concurrency if hasattr(c, "controller") else ""),
                },
                ttl_s=settings.worker_heartbeat_s * 3,
            )
        except Exception as exc:
            log.warning("heartbeat failed: %s", exc)

    def _promote_due(self) -> None:
        try:
            self.store.promote_due_retries()
        except Exception as exc:
            log.warning("cannot promote due retries: %s", exc)
