"""Worker names (pure): ``<pool>@<pod>``, the name a worker has in the job store."""

from __future__ import annotations


def worker_name_for(pool: str, pod: str) -> str:
    return f"{pool}@{pod}"


def pod_of(worker: str) -> str:
    """The pod part of a worker name (``cpu@renderfarm-cpu-7d9f-abc12`` -> the pod)."""
    return worker.split("@", 1)[1] if "@" in worker else worker
