"""Submitting jobs straight into the store and watching them, as the API and CLI would."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil

from renderfarm.core.jobs import TERMINAL_STATUSES, JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.queues import Priority
from renderfarm.core.store import JobStore
from renderfarm.core.submit import job_message, new_job
from tests.support.procs import PYTHON, ServiceProcess, wait_for

TERMINAL = set(TERMINAL_STATUSES)


def submit(store: JobStore, kind: str, input_path: Path | str, params: dict | None = None,
           priority: Priority = Priority.normal, message_for=None):
    """Store a job and push its message (``message_for(job)`` replaces the kind's own, e.g. other time limits)."""
    job_kind = get_kind(kind)
    uri = input_path.as_uri() if isinstance(input_path, Path) else input_path
    params = job_kind.params_model.model_validate(params or {}).model_dump(mode="json")
    job = new_job(job_kind, input=uri, params=params, priority=priority)
    stored, created = store.submit(job, message_for(job) if message_for else job_message(job_kind, job))
    assert created
    return stored


def wait_status(store: JobStore, job_id: str, statuses, timeout: float = 60):
    statuses = {JobStatus(s) for s in ([statuses] if isinstance(statuses, str) else statuses)}
    return wait_for(lambda: (job := store.get(job_id)).status in statuses and job, timeout,
                    what=f"job {job_id} to be {','.join(sorted(statuses))}")


def start_beat(env: dict[str, str], log_dir: Path | None = None) -> ServiceProcess:
    log_dir = log_dir or Path(env["RF_DATA_DIR"]) / "logs"
    return ServiceProcess([PYTHON, "-m", "renderfarm.worker.beat"], env, log_dir / "beat.log").start()


def ffmpeg_processes(worker: ServiceProcess) -> list[psutil.Process]:
    """The ffmpeg processes a worker (main process and pool children) runs now."""
    try:
        children = psutil.Process(worker.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for proc in children:
        try:
            if proc.name() == "ffmpeg":
                found.append(proc)
        except psutil.NoSuchProcess:
            continue
    return found


def pool_child_running_ffmpeg(worker: ServiceProcess) -> psutil.Process | None:
    """The pool process (a child of the worker's main process) whose job runs ffmpeg now."""
    for ffmpeg in ffmpeg_processes(worker):
        try:
            parent = ffmpeg.parent()
        except psutil.NoSuchProcess:
            continue
        if parent is not None and parent.pid != worker.proc.pid:
            return parent
    return None


def signal_process(proc: psutil.Process, sig: int = signal.SIGKILL) -> bool:
    try:
        proc.send_signal(sig)
        return True
    except psutil.NoSuchProcess:
        return False
