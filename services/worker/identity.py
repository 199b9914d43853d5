"""Who this worker is: its pool, its pod, its name in the job store."""

from __future__ import annotations

import os
import socket

from renderfarm.core.queues import WorkloadClass
from renderfarm.core.workers import pod_of, worker_name_for  # noqa: F401  (pod_of: one owner, in core)


def pod_name() -> str:
    # Kubernetes sets HOSTNAME to the pod name; the operator maps jobs to pods by it.
    return os.environ.get("HOSTNAME") or socket.gethostname()


def worker_name(pool: WorkloadClass | str | None = None) -> str:
    pool = pool or os.environ.get("RF_POOL", "cpu")
    return os.environ.get("RF_WORKER_NAME") or worker_name_for(WorkloadClass(pool).value, pod_name())
