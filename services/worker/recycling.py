"""Worker recycling, the imperative side: Celery's limits for this pool, the warm-up a
replacement pool process does before it takes a job, and the GPU memory check.

The limits themselves are decided in ``renderfarm.core.recycling``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import Future

from renderfarm.core.queues import WorkloadClass
from renderfarm.core.recycling import RecyclingLimits, UNBOUNDED_KB, gpu_memory_grown, recycling_limits
from renderfarm.core.settings import Settings

log = logging.getLogger("renderfarm.worker")

# Below Celery's worker_proc_alive_timeout (120 s): a child that takes longer to warm
# goes on, and its first job waits for the model as any job would.
WARM_WAIT_S = 100.0

# Set in the main process once the pool's first processes are up: a pool process
# forked after that (it inherits this value) is a replacement.
_pool_started = False


def pool_limits(pool: str, settings: Settings) -> RecyclingLimits:
    return recycling_limits(pool, settings.max_tasks_per_child, settings.max_memory_per_child_mb,
                            settings.max_gpu_memory_growth_mb)


def configure(app, pool: str, settings: Settings) -> RecyclingLimits:
    """Put the pool's limits on the Celery app (before the worker starts)."""
    limits = pool_limits(pool, settings)
    app.conf.worker_max_tasks_per_child = limits.celery_max_tasks
    app.conf.worker_max_memory_per_child = limits.celery_max_memory_kb
    _configured.append((pool, limits))
    return limits


_configured: list[tuple[str, RecyclingLimits]] = []


def describe(pool: str, limits: RecyclingLimits) -> str:
    gpu = (f", or after {limits.max_gpu_memory_growth_mb} MB GPU memory growth (when CUDA is in use)"
           if limits.max_gpu_memory_growth_mb else "")
    return (f"pool {pool}: a pool process is replaced after {limits.max_tasks_per_child or 'unlimited'} jobs, "
            f"or above {limits.max_memory_per_child_mb or 'unlimited'} MB resident after a job{gpu}")


def mark_pool_started() -> None:
    """Main process, logging set up: say which limits apply, and mark later forks as replacements."""
    global _pool_started
    _pool_started = True
    for pool, limits in _configured:
        log.info("%s", describe(pool, limits))


def is_replacement() -> bool:
    return _pool_started


def warm_before_jobs(pool: str, started: Future | None) -> None:
    """In a replacement process: wait for the model before the process reports up (and
    so before it is given a job), and say so."""
    if not is_replacement():
        return
    began = time.monotonic()
    if started is None:
        log.info("pool %s: replacement process %s is up (no model to warm)", pool, os.getpid())
        return
    try:
        started.result(timeout=WARM_WAIT_S)
    except Exception as exc:  # the first job reports the real error; the process must still come up
        log.warning("pool %s: replacement process %s could not warm its model (%s); its first job will load it",
                    pool, os.getpid(), exc)
        return
    log.info("pool %s: replacement process %s warmed its model in %.1f s before taking a job",
             pool, os.getpid(), time.monotonic() - began)


def install_gpu_memory_check(pool: str, limit_mb: int) -> bool:
    """Recycle this process when the GPU memory torch holds grew more than ``limit_mb``
    since its first job ended (model warm, working set allocated). GPU pools only, and
    only where CUDA is in use in this process.

    Celery's pool reads the process's memory after each job through
    ``billiard.pool.mem_rss``; this check answers "above any cap" when the GPU grew,
    so the same after-job path (the job is done and acknowledged) replaces the process.
    """
    if limit_mb <= 0 or not WorkloadClass(pool).needs_gpu:
        return False
    import billiard.pool as billiard_pool

    host_rss = billiard_pool.mem_rss
    baseline: list[int] = []

    def rss_or_gpu_growth() -> int:
        reserved = gpu_reserved_bytes()
        if reserved is not None:
            if not baseline:
                baseline.append(reserved)
            elif gpu_memory_grown(baseline[0], reserved, limit_mb):
                log.warning("pool %s: process %s holds %d MB more GPU memory than after its first job; replacing it",
                            pool, os.getpid(), (reserved - baseline[0]) // (1024 * 1024))
                return UNBOUNDED_KB + 1
        return host_rss()

    billiard_pool.mem_rss = rss_or_gpu_growth
    return True


def gpu_reserved_bytes() -> int | None:
    """GPU memory torch holds in this process, or None without CUDA in use (torch is never imported here)."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return int(torch.cuda.memory_reserved())
    except Exception:
        log.debug("cannot read GPU memory", exc_info=True)
    return None
