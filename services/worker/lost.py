"""The worker's main process ends the runs of pool processes it lost.

Celery tells the main process when a pool process dies under a job (the OOM
killer, a segfault: ``WorkerLostError``) and when it kills one at the hard time
limit. Neither run can record anything itself. This Request records it for them,
fenced by the attempt token (its first part is the pool process id): the job is
retried within its budget or fails with ``worker_lost`` / ``timeout``. Then Celery
goes on as configured: a lost worker's message is requeued (the next claim runs
the retry at once; the delayed entry is only a safety net), a timed-out one acked
(the delayed entry brings the retry after its backoff).
"""

from __future__ import annotations

import logging
import random

from billiard.exceptions import WorkerLostError
from celery.worker.request import Request

from renderfarm.core.jobs import ErrorType, JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.recovery import end_lost_run
from renderfarm.core.retry import retry_delay
from renderfarm.core.settings import get_settings
from renderfarm.core.store import token_pid
from renderfarm.worker import identity

log = logging.getLogger("renderfarm.worker")


class RunRequest(Request):
    def on_timeout(self, soft, timeout):
        if not soft:
            _end_run_of(self, ErrorType.timeout, f"hard time limit of {timeout} s exceeded", backoff=True)
        super().on_timeout(soft, timeout)

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):
        exc = getattr(exc_info.exception, "exc", exc_info.exception)  # unwrap ExceptionWithTraceback
        deliberate = getattr(self, "_already_cancelled", False) or getattr(self, "_already_revoked", False)
        if isinstance(exc, (WorkerLostError, SystemExit, KeyboardInterrupt)) and not deliberate:
            _end_run_of(self, ErrorType.worker_lost, f"pool process {self.worker_pid} was lost ({exc})", backoff=False)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


def _end_run_of(request: Request, error_type: ErrorType, message: str, *, backoff: bool) -> None:
    pid = request.worker_pid
    if not pid:
        return
    try:
        from renderfarm.worker.runner import job_store

        store = job_store()
        state = store.run_state(request.id)
        if (state.job.status != JobStatus.running or token_pid(state.token) != pid
                or state.job.worker != identity.worker_name()):
            return  # not this process's run (it never claimed, or the job moved on)
        kind = get_kind(state.job.kind)
        after = (retry_delay(kind.retry, state.retries_done, random.random()) if backoff
                 else get_settings().orphan_after_s)
        end_lost_run(store, state, error_type, message, requeue_after_s=after)
    except Exception as exc:  # Redis away: the run's lease lapses and beat recovers the job
        log.warning("could not end the lost run of job %s: %s", request.id, exc)
