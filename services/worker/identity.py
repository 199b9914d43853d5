"""Who this worker is: its pool, its pod, its name in the job store."""

from __future__ import annotations

import os
import socket

from renderfarm.core.queues import WorkloadClass


def pod_name() -> str:
    # Kubernetes sets HOSTNAME to the pod name; the operator maps jobs to pods by it.
    return os.environ.get("HOSTNAME") or socket.gethostname()


def worker_name(pool: WorkloadClass | str | None = None) -> str:
    pool = pool or os.environ.get("RF_POOL", "cpu")
    return os.environ.get("RF_WORKER_NAME") or f"{WorkloadClass(pool).value}@{pod_name()}"


def pod_of(worker: str) -> str:
    """The pod part of a worker name (``cpu@renderfarm-cpu-7d9f-abc12`` -> the pod)."""
    return worker.split("@", 1)[1] if "@" in worker else worker
