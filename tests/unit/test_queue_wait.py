"""Queue wait (enqueue -> start) of a claimed run: pure, from the claim's answer."""

from __future__ import annotations

from datetime import datetime, timezone

from renderfarm.core.jobs import Job
from renderfarm.core.store import Claim, RunState
from renderfarm.worker.runner import queue_wait_s


def _claim(previous_status: str, created: float, started: float, enqueued_at: float | None = None) -> Claim:
    job = Job(id="j", kind="probe", input="file:///x.mp4", priority="normal", status="running", queue="cpu.normal",
              created_at=datetime.fromtimestamp(created, tz=timezone.utc),
              started_at=datetime.fromtimestamp(started, tz=timezone.utc))
    return Claim("run", previous_status, "token", RunState(job=job, token="token", budget_base=0,
                                                           enqueued_at=enqueued_at))


def test_a_first_attempt_waited_since_its_submit():
    assert queue_wait_s(_claim("queued", created=100.0, started=103.5)) == 3.5


def test_a_retry_waited_since_its_backoff_fell_due_not_since_the_submit():
    assert queue_wait_s(_claim("retrying", created=100.0, started=131.0, enqueued_at=130.0)) == 1.0


def test_a_run_taken_over_from_a_lost_one_did_not_wait_in_a_queue():
    assert queue_wait_s(_claim("running", created=100.0, started=500.0)) is None


def test_clock_skew_between_hosts_never_gives_a_negative_wait():
    assert queue_wait_s(_claim("queued", created=100.0, started=99.9)) == 0.0
