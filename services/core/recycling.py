"""Worker recycling: when a pool process is replaced by a fresh one (pure).

Long-running media workers leak (PyTorch caches, ffmpeg buffers, fragmented heaps).
Celery's remedy is to replace a pool process after N jobs
(``worker_max_tasks_per_child``) or after a job leaves it above a resident-memory
cap (``worker_max_memory_per_child``, in KiB). GPU pools also watch the memory
torch holds on the GPU: growth above a cap since the model was warm recycles too.

Each limit comes from ``RF_MAX_TASKS_PER_CHILD`` / ``RF_MAX_MEMORY_PER_CHILD_MB`` /
``RF_MAX_GPU_MEMORY_GROWTH_MB`` when set (0 turns it off), else the pool's default below.
"""

from __future__ import annotations

from dataclasses import dataclass

from renderfarm.core.queues import WorkloadClass


@dataclass(frozen=True)
class RecyclingLimits:
    max_tasks_per_child: int  # 0: never by count
    max_memory_per_child_mb: int  # host resident memory; 0: never by memory
    max_gpu_memory_growth_mb: int = 0  # GPU pools; 0: never by GPU memory

    @property
    def celery_max_tasks(self) -> int | None:
        return self.max_tasks_per_child or None

    @property
    def celery_max_memory_kb(self) -> int | None:
        """Celery's ``worker_max_memory_per_child`` (KiB). With only a GPU cap it is set
        very high, so the pool still runs its after-job check (where the GPU is read)."""
        if self.max_memory_per_child_mb:
            return self.max_memory_per_child_mb * 1024
        if self.max_gpu_memory_growth_mb:
            return UNBOUNDED_KB
        return None


UNBOUNDED_KB = 1 << 40  # 1 PiB: never reached by host memory

# Per-pool defaults. CPU children stay small (ffmpeg runs in its own processes), so
# they recycle often and cheaply. A GPU child reloads its model when replaced:
# recycle it rarely by count, and mainly on real growth.
POOL_DEFAULTS: dict[WorkloadClass, RecyclingLimits] = {
    WorkloadClass.cpu: RecyclingLimits(max_tasks_per_child=500, max_memory_per_child_mb=1024),
    WorkloadClass.gpu_transcribe: RecyclingLimits(max_tasks_per_child=1000, max_memory_per_child_mb=6144,
                                                  max_gpu_memory_growth_mb=2048),
    WorkloadClass.gpu_vision: RecyclingLimits(max_tasks_per_child=1000, max_memory_per_child_mb=6144,
                                              max_gpu_memory_growth_mb=2048),
}


def recycling_limits(pool: WorkloadClass | str, max_tasks: int | None = None, max_memory_mb: int | None = None,
                     max_gpu_growth_mb: int | None = None) -> RecyclingLimits:
    """The pool's defaults with each setting that is set (not None) in its place."""
    default = POOL_DEFAULTS[WorkloadClass(pool)]
    return RecyclingLimits(
        max_tasks_per_child=default.max_tasks_per_child if max_tasks is None else max_tasks,
        max_memory_per_child_mb=default.max_memory_per_child_mb if max_memory_mb is None else max_memory_mb,
        max_gpu_memory_growth_mb=default.max_gpu_memory_growth_mb if max_gpu_growth_mb is None else max_gpu_growth_mb,
    )


def gpu_memory_grown(baseline_bytes: int, now_bytes: int, limit_mb: int) -> bool:
    """Whether the GPU memory a child holds grew past the cap since it was warm."""
    return limit_mb > 0 and now_bytes - baseline_bytes > limit_mb * 1024 * 1024
