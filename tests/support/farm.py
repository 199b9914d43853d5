"""Running kinds as ordinary jobs on real worker processes: a store, a submit that
takes params as a client sends them, and a wait that shows the worker log on failure."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from renderfarm.core.jobs import Job, JobStatus
from renderfarm.core.redis_conn import redis_client as make_redis
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobStore
from tests.support.jobs import TERMINAL, submit
from tests.support.procs import ServiceProcess, wait_for


def open_store() -> JobStore:
    settings = Settings()
    return JobStore(make_redis(settings, socket_timeout_s=5), retention_seconds=settings.retention_seconds)


def run_job(store: JobStore, worker: ServiceProcess, kind: str, input_ref: Path | str, params: dict | None = None,
            timeout: float = 240, expect: JobStatus = JobStatus.succeeded) -> Job:
    """Submit one job, wait for it to end, and fail with the worker's log if it ended otherwise."""
    job = submit(store, kind, input_ref, params)
    try:
        done = wait_for(lambda: (found := store.get(job.id)).status in TERMINAL and found, timeout,
                        interval=0.2, what=f"{kind} job {job.id} to finish")
    except TimeoutError:
        pytest.fail(f"{kind} job did not finish: {store.get(job.id)}\nworker log:\n{worker.log()[-4000:]}")
    if done.status != expect:
        pytest.fail(f"{kind} job ended {done.status}, not {expect}: {done.error}\nworker log:\n{worker.log()[-4000:]}")
    return done


def output_path(job: Job, name: str) -> Path:
    output = next((o for o in job.result.outputs if o.name == name), None)
    assert output is not None, f"{job.kind} job has no output {name!r}: {[o.name for o in job.result.outputs]}"
    path = Path(urlsplit(output.uri).path)
    assert path.is_file() and path.stat().st_size == output.size_bytes
    return path
