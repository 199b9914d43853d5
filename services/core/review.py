"""Manual review of jobs that failed for good: requeue (maybe with changed params or
priority), dismiss, bulk requeue by filter.

The decisions (what a requeue changes, which labels a metric may carry) are pure;
each action itself is one atomic call of the job store (``review_requeue`` /
``review_dismiss``), so a crash in the middle of a bulk action leaves every job
either still in review or queued again, never lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from renderfarm.core.jobs import ErrorType, Job
from renderfarm.core.kinds import KINDS, get_kind
from renderfarm.core.queues import Priority, queue_name
from renderfarm.core.store import JobNotFound, JobStore, NotInReview
from renderfarm.core.submit import job_message

OTHER = "other"  # the label for a kind or error type the registry does not know
MAX_BULK = 1000  # jobs one bulk requeue call moves at most


@dataclass(frozen=True)
class Actor:
    """Who acts: the API key's id (a digest prefix, never the key) and its tenant."""

    key_id: str
    tenant: str


def action_record(action: str, actor: Actor, changes: dict[str, Any] | None = None,
                  at: datetime | None = None) -> dict[str, Any]:
    """What goes on the job's review log (pure)."""
    return {"action": action, "by": actor.key_id, "tenant": actor.tenant,
            "at": (at or datetime.now(timezone.utc)).isoformat(), "changes": changes or {}}


def requeue_fields(job: Job, params: dict[str, Any] | None, priority: Priority | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(fields to write, changes to record) for a requeue (pure). ``params`` are
    validated by the kind's params model (raises pydantic.ValidationError); a new
    priority moves the job to that priority's queue of its class."""
    kind = get_kind(job.kind)
    fields: dict[str, Any] = {"error": None, "result": None, "progress": 0, "stage": "",
                              "message": "requeued from review", "started_at": None, "finished_at": None,
                              "worker": None}
    changes: dict[str, Any] = {}
    if params is not None:
        validated = kind.params_model.model_validate(params).model_dump(mode="json")
        fields["params"] = validated
        changes["params"] = validated
    if priority is not None and Priority(priority) != job.priority:
        fields["priority"] = Priority(priority).value
        fields["queue"] = queue_name(kind.workload, priority)
        changes["priority"] = Priority(priority).value
    return fields, changes


class StepOfWorkflow(RuntimeError):
    """A workflow's step runs again through its workflow's retry, which the workflow sees."""

    def __init__(self, job_id: str, workflow_id: str):
        super().__init__(f"job {job_id} is a step of workflow {workflow_id}: retry the workflow")
        self.workflow_id = workflow_id


def requeue(store: JobStore, job_id: str, actor: Actor, *, tenant: str | None, params: dict[str, Any] | None = None,
            priority: Priority | None = None) -> Job:
    """Run a job in review again with a fresh retry budget. ``tenant`` None: any tenant's (admin)."""
    job = store.get(job_id)
    if tenant is not None and job.tenant != tenant:
        raise JobNotFound(job_id)
    if (workflow := store.workflow_of(job_id)) is not None:
        raise StepOfWorkflow(job_id, workflow)
    fields, changes = requeue_fields(job, params, priority)
    kind = get_kind(job.kind)
    message = job_message(kind, job, queue=fields.get("queue", job.queue))
    return store.review_requeue(job_id, message=message, action=action_record("requeue", actor, changes),
                                fields=fields, tenant=tenant)


def dismiss(store: JobStore, job_id: str, actor: Actor, *, tenant: str | None) -> Job:
    return store.review_dismiss(job_id, action=action_record("dismiss", actor), tenant=tenant)


def requeue_matching(store: JobStore, actor: Actor, *, tenant: str | None, kind: str | None = None,
                     error_type: str | None = None, since: float | None = None,
                     limit: int = MAX_BULK) -> tuple[list[str], bool]:
    """Requeue every job in review that matches; returns (ids requeued, whether more match)."""
    requeued: list[str] = []
    cursor: str | None = None
    while len(requeued) < limit:
        page = store.review_page(tenant=tenant, kind=kind, error_type=error_type, since=since,
                                 limit=min(200, limit - len(requeued)), cursor=cursor)
        for _, job in page.entries:
            try:
                requeue(store, job.id, actor, tenant=tenant)
            except (JobNotFound, NotInReview):
                continue  # acted on (or expired) meanwhile
            except StepOfWorkflow:
                continue  # its workflow's retry runs it
            requeued.append(job.id)
        if page.next_cursor is None:
            return requeued, False
        cursor = page.next_cursor
    more = bool(store.review_page(tenant=tenant, kind=kind, error_type=error_type, since=since, limit=1).entries)
    return requeued, more


def bounded_backlog(counts: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """Fold kinds and error types the registry does not know into ``other`` (pure):
    metric labels stay bounded whatever the records hold."""
    known_types = {t.value for t in ErrorType}
    out: dict[tuple[str, str], int] = {}
    for (kind, error_type), count in counts.items():
        label = (kind if kind in KINDS else OTHER, error_type if error_type in known_types else OTHER)
        out[label] = out.get(label, 0) + count
    return out
