"""Workload handlers, one module per pool, imported only by that pool's workers
(a CPU worker never imports torch).

Each module exposes ``HANDLERS: dict[kind name, handler]`` and may expose
``warm_up(settings)``, called once per worker process before the first job, to
load models and keep them warm.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from renderfarm.core.kinds import kinds_for
from renderfarm.core.queues import WorkloadClass
from renderfarm.worker.context import Handler

_POOL_MODULES: dict[WorkloadClass, str] = {
    WorkloadClass.cpu: "renderfarm.worker.workloads.cpu_pool",
    WorkloadClass.gpu_transcribe: "renderfarm.worker.workloads.transcribe",
    WorkloadClass.gpu_vision: "renderfarm.worker.workloads.vision",
}


def pool_module(pool: WorkloadClass | str) -> ModuleType:
    return importlib.import_module(_POOL_MODULES[WorkloadClass(pool)])


def handlers_for(pool: WorkloadClass | str) -> dict[str, Handler]:
    module = pool_module(pool)
    handlers: dict[str, Handler] = dict(module.HANDLERS)
    missing = [kind.name for kind in kinds_for(pool) if kind.name not in handlers]
    if missing:
        raise RuntimeError(f"pool {pool} has no handler for kinds: {', '.join(missing)}")
    return handlers
