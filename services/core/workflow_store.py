"""The Redis workflow store: one hash per workflow, advanced in one atomic call per change.

Key layout (all under ``rf:``; the job keys stay the job store's):

- ``rf:workflow:<id>``            hash: id, tenant, template, status, version, created_at,
  updated_at, labels (JSON), flow (JSON: the expanded spec and the step table), body_hash
- ``rf:workflows:all``            zset: every workflow by creation time (µs)
- ``rf:workflows:tenant:<t>``     zset: one tenant's workflows, same score (not under
  ``rf:tenant:``: the job store's expiry pass reads every index there as job ids)
- ``rf:wfidem:<tenant>:<key>``    string: "<workflow id> <body hash>" for Idempotency-Key
- ``rf:wfevents:<id>``            pub/sub channel: the workflow changed (its steps' jobs
  publish their own progress on their job channels)

How a workflow moves, and why no step starts twice: every change (submit, a step's
job ended, cancel, retry) reads the workflow, asks the pure core (workflows.py) what
follows, and writes the answer with ``_APPLY``: one Lua call that checks the version
it read, writes the new step table, creates the jobs of the steps that became ready
(records with their queue message, indexes, and the push onto their pool's queue,
through the job store's ``create_job``) and removes the ended job from the due set.
A second caller that read the same version loses the compare and reads again, and
then finds the step already advanced: starting a step is claiming it, once.

A step's job that ends is put in the due set (``rf:workflows:due``) by the job store
in the same call as its terminal transition, whoever ends it (the worker, a cancel,
orphan recovery). The worker advances right after; beat advances whatever is left
there (a worker killed between the two), and a repeat is harmless.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import redis

from renderfarm.core import workflows as wf
from renderfarm.core.jobs import TERMINAL_STATUSES, JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.store import (
    CREATE_JOB_LUA,
    WORKFLOW_DUE,
    JobNotFound,
    JobStore,
    TransitionConflict,
    job_key,
    job_record_args,
    newest_first,
)
from renderfarm.core.submit import job_message, new_job

PREFIX = "rf:"
INDEX_ALL = f"{PREFIX}workflows:all"
_TENANT_PREFIX = f"{PREFIX}workflows:tenant:"
MAX_APPLY_TRIES = 50


def workflow_key(workflow_id: str) -> str:
    return f"{PREFIX}workflow:{workflow_id}"


def tenant_index(tenant: str) -> str:
    return f"{_TENANT_PREFIX}{tenant}"


def idempotency_redis_key(tenant: str, key: str) -> str:
    return f"{PREFIX}wfidem:{tenant}:{key}"


def events_channel(workflow_id: str) -> str:
    return f"{PREFIX}wfevents:{workflow_id}"


def new_workflow_id() -> str:
    return "wf-" + uuid.uuid4().hex


# KEYS: 1 workflow, 2 due set, 3 events channel, 4 all index, 5 tenant index, 6 idem key ('' = none),
#       then 5 per job: job key, queue, all-jobs index, kind index, queued index
# ARGV: 1 expected version ('' = the workflow must not exist yet), 2 score, 3 idem value, 4 idem ttl,
#       5 due member to remove ('' = none), 6 event json, 7 ttl (0 = keep), 8 n field items, fields...,
#       then the job count, then per job: id, score, message, n field items, fields...
_APPLY = CREATE_JOB_LUA + """
if KEYS[6] ~= '' then
  local existing = redis.call('GET', KEYS[6])
  if existing then return {'exists', existing} end
end
local version = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '' then
  if version then return {'conflict', version} end
elseif version ~= ARGV[1] then
  return {'conflict', version or ''}
end
local at = 8
local n = tonumber(ARGV[at])
local fields = {}
for i = at + 1, at + n do fields[#fields + 1] = ARGV[i] end
at = at + n + 1
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('ZADD', KEYS[4], 'NX', ARGV[2], redis.call('HGET', KEYS[1], 'id'))
redis.call('ZADD', KEYS[5], 'NX', ARGV[2], redis.call('HGET', KEYS[1], 'id'))
local jobs = tonumber(ARGV[at])
at = at + 1
for j = 1, jobs do
  local k = 6 + (j - 1) * 5
  local count = tonumber(ARGV[at + 3])
  local job_fields = {}
  for i = at + 4, at + 3 + count do job_fields[#job_fields + 1] = ARGV[i] end
  create_job(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5], ARGV[at], ARGV[at + 1], ARGV[at + 2],
             job_fields)
  at = at + 4 + count
end
if ARGV[5] ~= '' then redis.call('ZREM', KEYS[2], ARGV[5]) end
if tonumber(ARGV[7]) > 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7])) else redis.call('PERSIST', KEYS[1]) end
if KEYS[6] ~= '' then redis.call('SET', KEYS[6], ARGV[3], 'EX', tonumber(ARGV[4])) end
redis.call('PUBLISH', KEYS[3], ARGV[6])
return {'ok', redis.call('HGET', KEYS[1], 'version')}
"""


class WorkflowNotFound(KeyError):
    pass


class WorkflowConflict(RuntimeError):
    """The workflow is not in a state that allows the request (cancel a finished one...)."""


class IdempotencyConflict(RuntimeError):
    def __init__(self, workflow_id: str):
        super().__init__("Idempotency-Key was already used with a different request body")
        self.workflow_id = workflow_id


class _Lost(RuntimeError):
    """The compare failed: someone changed the workflow since it was read."""


@dataclass(frozen=True)
class WorkflowRecord:
    id: str
    tenant: str
    template: str
    status: wf.WorkflowStatus
    version: int
    flow: wf.Flow
    labels: dict[str, str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class WorkflowPage:
    workflows: list[WorkflowRecord]
    next_cursor: str | None


def decode_record(raw: dict[str, str]) -> WorkflowRecord:
    return WorkflowRecord(
        id=raw["id"], tenant=raw.get("tenant", "default"), template=raw.get("template", ""),
        status=wf.WorkflowStatus(raw["status"]), version=int(raw.get("version") or 0),
        flow=wf.Flow.model_validate_json(raw["flow"]), labels=json.loads(raw.get("labels") or "{}"),
        created_at=datetime.fromtimestamp(float(raw["created_at"]), tz=timezone.utc),
        updated_at=datetime.fromtimestamp(float(raw.get("updated_at") or raw["created_at"]), tz=timezone.utc),
    )


def _flat(fields: dict[str, str]) -> list[str]:
    return [str(len(fields) * 2)] + [item for pair in fields.items() for item in pair]


class WorkflowStore:
    def __init__(self, store: JobStore):
        self.store = store
        self.redis: redis.Redis = store.redis
        self._apply = self.redis.register_script(_APPLY)

    # -- reads ----------------------------------------------------------------------------

    def get(self, workflow_id: str) -> WorkflowRecord:
        raw = self.redis.hgetall(workflow_key(workflow_id))
        if not raw:
            raise WorkflowNotFound(workflow_id)
        return decode_record(raw)

    def list(self, *, tenant: str, status: wf.WorkflowStatus | None = None, template: str | None = None,
             limit: int = 50, cursor: str | None = None) -> WorkflowPage:
        """Newest first, one tenant's; filters are checked on the records."""
        index = tenant_index(tenant)
        records, next_cursor = newest_first(
            self.redis, index, record_key=workflow_key, decode=decode_record, limit=limit, cursor=cursor,
            keep=lambda record: not ((status and record.status != status) or (template and record.template != template)
                                     or record.tenant != tenant))
        return WorkflowPage(records, next_cursor)

    def job_progress(self, record: WorkflowRecord) -> dict[str, tuple[str, float]]:
        """Job id -> (status, progress) for every step job, in one round trip."""
        ids = [state.job_id for state in record.flow.steps.values() if state.job_id]
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(job_key(job_id), "status", "progress")
        out = {}
        for job_id, (status, progress) in zip(ids, pipe.execute()):
            if status:
                out[job_id] = (status, float(progress or 0))
        return out


    # -- writes ---------------------------------------------------------------------------

    def submit(self, spec: wf.WorkflowSpec, *, tenant: str, template: str = "", labels: dict[str, str] | None = None,
               idempotency_key: str | None = None, body_hash: str = "") -> tuple[WorkflowRecord, bool]:
        """Create the workflow and its root steps' jobs in one call. Returns (record, created)."""
        workflow_id = new_workflow_id()
        now = time.time()
        advance = wf.on_submit(wf.Flow.new(spec))
        idem = idempotency_redis_key(tenant, idempotency_key) if idempotency_key else ""
        base = {"id": workflow_id, "tenant": tenant, "template": template, "created_at": repr(now),
                "labels": json.dumps(labels or {}), "body_hash": body_hash}
        try:
            self._write(workflow_id, tenant, "", advance, now=now, extra=base, idem=idem,
                        idem_value=f"{workflow_id} {body_hash}")
        except _Exists as exc:
            existing_id, _, existing_hash = exc.value.partition(" ")
            if existing_hash != body_hash:
                raise IdempotencyConflict(existing_id) from None
            return self.get(existing_id), False
        return self.get(workflow_id), True

    def advance(self, job_id: str) -> bool:
        """A step's job ended (or may have): move its workflow on. Idempotent; True when
        this call changed the workflow."""
        workflow_id = self.store.workflow_of(job_id)
        if workflow_id is None:
            self.redis.zrem(WORKFLOW_DUE, job_id)
            return False
        try:
            job = self.store.get(job_id)
        except JobNotFound:
            self.redis.zrem(WORKFLOW_DUE, job_id)
            return False
        if job.status not in TERMINAL_STATUSES:
            return False  # retried meanwhile: its next end comes due again
        outputs = {ref.name: ref.uri for ref in (job.result.outputs if job.result else [])}
        metadata = job.result.metadata if job.result else {}
        return self._change(workflow_id, lambda flow: wf.on_job_end(flow, job_id, job.status, outputs, metadata),
                            due=job_id)

    def advance_due(self, ended_before: float | None = None, limit: int = 200) -> int:
        """Advance past every due step job (beat: those a worker did not get to)."""
        moved = 0
        for job_id in self.store.workflow_due(time.time() if ended_before is None else ended_before, limit):
            try:
                moved += self.advance(job_id)
            except WorkflowNotFound:
                self.redis.zrem(WORKFLOW_DUE, job_id)
        return moved

    def cancel(self, workflow_id: str) -> WorkflowRecord:
        """Pending steps never run; the jobs of started ones are cancelled like any job."""
        if not self._change(workflow_id, wf.on_cancel):
            raise WorkflowConflict(f"workflow {workflow_id} is {self.get(workflow_id).status}; "
                                   "only a running workflow can be cancelled")
        return self.get(workflow_id)

    def retry(self, workflow_id: str) -> WorkflowRecord:
        """Failed, cancelled and skipped steps run again (new jobs); succeeded ones keep their outputs."""
        if not self._change(workflow_id, wf.on_retry):
            raise WorkflowConflict(f"workflow {workflow_id} is {self.get(workflow_id).status}; "
                                   "only a failed or cancelled workflow can be retried")
        return self.get(workflow_id)

    # -- the one write path ----------------------------------------------------------------

    def _change(self, workflow_id: str, decide, *, due: str = "") -> bool:
        """Read, decide (pure), write if nobody wrote meanwhile; again otherwise."""
        for _ in range(MAX_APPLY_TRIES):
            raw = self.redis.hgetall(workflow_key(workflow_id))
            if not raw:
                raise WorkflowNotFound(workflow_id)
            record = decode_record(raw)
            advance = decide(record.flow)
            if not advance.changed:
                if due:
                    self.redis.zrem(WORKFLOW_DUE, due)
                return False
            try:
                self._write(workflow_id, record.tenant, str(record.version), advance, now=time.time(), due=due)
            except _Lost:
                continue
            # Stop what the change cancelled (fail_fast, a cancel), and record those ends
            # now rather than on beat's next pass.
            for job_id in advance.cancel_jobs:
                if cancel_job(self.store, job_id, "cancelled with its workflow") is not None:
                    self.advance(job_id)
            return True
        raise RuntimeError(f"workflow {workflow_id}: gave up after {MAX_APPLY_TRIES} concurrent changes")

    def _write(self, workflow_id: str, tenant: str, expected: str, advance: wf.Advance, *, now: float,
               extra: dict[str, str] | None = None, idem: str = "", idem_value: str = "", due: str = "") -> None:
        flow, jobs = self._start(workflow_id, tenant, advance)
        status = wf.status_of(flow)
        # Unset fields stay out of the stored flow: a process of the version before reads it too.
        stored = flow.model_dump_json(by_alias=True, exclude_none=True)
        fields = dict(extra or {}) | {"flow": stored, "status": status.value, "updated_at": repr(now)}
        keys = [workflow_key(workflow_id), WORKFLOW_DUE, events_channel(workflow_id), INDEX_ALL,
                tenant_index(tenant), idem]
        job_args: list[str] = []
        for job_keys, args in jobs:
            keys += job_keys
            job_args += args
        created = float(extra["created_at"]) if extra else now
        event = json.dumps({"workflow_id": workflow_id, "status": status.value,
                            "at": datetime.now(timezone.utc).isoformat()})
        ttl = self.store.retention_seconds if status in wf.TERMINAL_WORKFLOW else 0
        reply = self._apply(keys=keys, args=[expected, str(int(created * 1_000_000)), idem_value,
                                             self.store.retention_seconds, due, event, ttl, *_flat(fields),
                                             str(len(jobs)), *job_args])
        if reply[0] == "exists":
            raise _Exists(reply[1])
        if reply[0] == "conflict":
            raise _Lost(workflow_id)

    def _start(self, workflow_id: str, tenant: str, advance: wf.Advance
               ) -> tuple[wf.Flow, list[tuple[list[str], list[str]]]]:
        """The jobs of the steps to start, and the flow with those steps started. A step
        whose references cannot be resolved (its producer wrote no such output) fails
        without a job, and what follows from that is settled again."""
        flow = advance.flow
        jobs: list[tuple[list[str], list[str]]] = []
        pending = list(advance.start)
        while pending:
            name = pending.pop(0)
            step = flow.spec.step(name)
            try:
                kind = get_kind(step.kind)
                uri, params = wf.resolve(flow, name)
                params = kind.params_model.model_validate(params).model_dump(mode="json")
            except (KeyError, ValueError) as exc:
                follow = wf.fail_step(flow, name, str(exc))
                flow = follow.flow
                advance.cancel_jobs.extend(follow.cancel_jobs)
                pending = list(follow.start)  # the steps still waiting to start, after the settling
                continue
            job = new_job(kind, input=uri, params=params, priority=step.priority or flow.spec.priority,
                          labels={"workflow": workflow_id, "step": name}, tenant=tenant)
            jobs.append(job_record_args(job, job_message(kind, job), workflow=workflow_id))
            flow = wf.mark_started(flow, name, job.id)
        return flow, jobs


class _Exists(RuntimeError):
    def __init__(self, value: str):
        super().__init__(value)
        self.value = value


def cancel_job(store: JobStore, job_id: str, message: str = "cancelled by request") -> Any:
    """The one way a job is cancelled (the API's cancel route and workflows): a queued
    job never runs, a running one is stopped. None when it had already ended."""
    try:
        return store.transition(job_id, JobStatus.cancelled, fields={
            "finished_at": datetime.now(timezone.utc), "stage": "cancelled", "message": message,
        })
    except (JobNotFound, TransitionConflict):
        return None
