"""Per-process set-up: each pool child loads its workload (and models) once."""

from __future__ import annotations

import logging
import os

from celery.signals import worker_process_init

log = logging.getLogger("renderfarm.worker")


@worker_process_init.connect
def _warm_up(**_kwargs) -> None:
    from renderfarm.core.settings import get_settings
    from renderfarm.worker.workloads import pool_module

    pool = os.environ.get("RF_POOL", "cpu")
    module = pool_module(pool)
    warm_up = getattr(module, "warm_up", None)
    if warm_up is not None:
        warm_up(get_settings())
        log.info("pool %s: warm-up started in process %s", pool, os.getpid())
