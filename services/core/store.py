"""The Redis job store: one hash per job, sorted-set indexes, atomic transitions.

Key layout (all under ``rf:``):

- ``rf:job:<id>``               hash: the job's fields (JSON for nested values)
- ``rf:jobs:all``               zset: every job, scored by creation time (µs)
- ``rf:jobs:status:<status>``   zset: jobs by status, same score
- ``rf:jobs:kind:<kind>``       zset: jobs by kind, same score
- ``rf:tenant:<t>:jobs``        zset: one tenant's jobs, same score (its listing reads
  only these, and ``rf:tenant:<t>:status:<status>`` / ``rf:tenant:<t>:kind:<kind>``)
- ``rf:jobs:expires``           zset: ``expiry.expiry_member`` of each finished job -> when its record
  expires (epoch s): the expiry pass reads only the due entries, never all jobs
- ``rf:idem:<tenant>:<key>``    string: "<job id> <body hash>" for Idempotency-Key
- ``rf:review``                 zset: jobs that failed for good (the dead-letter set, worked
  through by manual review), scored by when they failed (epoch s); per tenant
  ``rf:tenant:<t>:review``. (Before: ``rf:deadletter``, a list; maintenance adopts it.)
- ``rf:inflight:<queue>``       hash: job id -> worker name for jobs taken, not done
- ``rf:leases``                 zset: running job id -> when its run's lease lapses (epoch s)
- ``rf:paused``                 set: paused queue names
- ``rf:workers``                zset: worker name -> last heartbeat (epoch s)
- ``rf:worker:<name>``          hash: a worker's pool, queues, pod, pid (expires)
- ``rf:events:<id>``            pub/sub channel: progress events
- ``rf:workflows:due``          zset: ended jobs of workflow steps -> when they ended (the
  workflow engine advances each and removes it; see workflow_store.py)
- ``rf:batch:<id>``             hash: a batch submit's tenant, size, creation time (expires with
  retention); ``rf:batch:<id>:jobs`` list: its job ids in submit order

Every status change goes through one Lua call that checks the move against
``jobs.allowed_sources`` (and, for a run's own writes, its attempt token), updates
the hash, the indexes, in-flight, the lease and the delayed set, publishes the
event and returns the new record: no reader ever sees a job in two statuses or a
half-written job, and no caller can forget a step.

Exactly once: a claim gives the run an attempt token (field ``attempt``) and a
lease. Every later write of that run names the token, so a run that was replaced
(its lease lapsed, it was cancelled and retried) can no longer write anything.
Internal fields (never in the API's Job): ``attempt``, ``last_attempt``,
``budget_base`` (attempts before the last manual retry), ``queue_message`` (only while
a retry waits in ``rf:delayed``), ``body_hash``, ``webhook_attempts``, ``workflow`` (the workflow a step's job
belongs to), ``enqueued_at``, ``run_span``, and the message
stamp (``message_queue``, ``message_at``, trace headers; see messages.message_stamp).

Memory: a queued job is its hash, six index entries and its queue message. The hash
keeps no copy of the message (the stamp rebuilds it), and submit leaves out empty
fields, so a queued job's hash stays within Redis's listpack encoding (values up to
``hash-max-listpack-value``, 64 bytes by default), about a fifth of a hashtable's cost.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, TypeVar

import redis

from renderfarm.core import queues as queue_names
from renderfarm.core.expiry import plan_expiry
from renderfarm.core.kinds import KINDS
from renderfarm.core.messages import (
    TRACE_HEADERS,
    KOMBU_UNACKED,
    KOMBU_UNACKED_INDEX,
    message_enqueued,
    message_from_record,
    message_stamp,
    message_task_id,
    unacked_task_id,
)
from renderfarm.core.jobs import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    Job,
    JobError,
    JobResult,
    JobStatus,
    ProgressEvent,
    allowed_sources,
)

PREFIX = "rf:"
INDEX_ALL = f"{PREFIX}jobs:all"
DEADLETTER = f"{PREFIX}review"
LEGACY_DEADLETTER = f"{PREFIX}deadletter"  # the old list; adopt_legacy_dead_letter() moves it
PAUSED = f"{PREFIX}paused"
WORKERS = f"{PREFIX}workers"
DELAYED = f"{PREFIX}delayed"
BEAT_HEARTBEAT = f"{PREFIX}beat"
WEBHOOKS = f"{PREFIX}webhooks"  # zset: job id -> when its webhook is due
LEASES = f"{PREFIX}leases"
EXPIRES = f"{PREFIX}jobs:expires"
INFLIGHT_PREFIX = f"{PREFIX}inflight:"
WORKFLOW_DUE = f"{PREFIX}workflows:due"  # zset: step jobs that ended -> when; the engine advances them
_INDEX_PREFIX = f"{PREFIX}jobs:"
_TENANT_PREFIX = f"{PREFIX}tenant:"


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def status_index(status: JobStatus | str) -> str:
    return f"{_INDEX_PREFIX}status:{JobStatus(status).value}"


def kind_index(kind: str) -> str:
    return f"{_INDEX_PREFIX}kind:{kind}"


def tenant_index(tenant: str) -> str:
    return f"{_TENANT_PREFIX}{tenant}:jobs"


def tenant_status_index(tenant: str, status: JobStatus | str) -> str:
    return f"{_TENANT_PREFIX}{tenant}:status:{JobStatus(status).value}"


def tenant_kind_index(tenant: str, kind: str) -> str:
    return f"{_TENANT_PREFIX}{tenant}:kind:{kind}"


def idempotency_key(tenant: str, key: str) -> str:
    return f"{PREFIX}idem:{tenant}:{key}"


def inflight_key(queue: str) -> str:
    return f"{INFLIGHT_PREFIX}{queue}"


def worker_key(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def events_channel(job_id: str) -> str:
    return f"{PREFIX}events:{job_id}"


def batch_key(batch_id: str) -> str:
    return f"{PREFIX}batch:{batch_id}"


def batch_jobs_key(batch_id: str) -> str:
    return f"{PREFIX}batch:{batch_id}:jobs"


def new_job_id() -> str:
    return uuid.uuid4().hex


def body_fingerprint(payload: dict[str, Any]) -> str:
    """A stable hash of a submit body, to tell a replay from a conflicting reuse of a key."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def _now() -> float:
    return time.time()


def _score(ts: float) -> int:
    return int(ts * 1_000_000)


def _iso_now() -> str:
    return datetime.now(timezone.utc).isoformat()


def new_attempt_token(pid: int) -> str:
    """A run's token: the pool process id first, so the worker's main process can
    recognise the run of a pool process it lost (``token_pid``)."""
    return f"{pid}.{uuid.uuid4().hex[:16]}"


def token_pid(token: str) -> int | None:
    head, _, _ = token.partition(".")
    return int(head) if head.isdigit() else None


# --- encoding (pure) ---------------------------------------------------------

_JSON_FIELDS = ("params", "result", "error", "labels", "review_log")
_TIME_FIELDS = ("created_at", "started_at", "finished_at")


def encode_fields(fields: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in fields.items():
        if value is None:
            out[name] = ""
        elif name in _JSON_FIELDS:
            out[name] = json.dumps(value.model_dump(mode="json") if hasattr(value, "model_dump") else value)
        elif isinstance(value, datetime):
            out[name] = repr(value.timestamp())
        elif isinstance(value, bool):
            out[name] = "1" if value else "0"
        else:
            out[name] = str(value)
    return out


def decode_job(raw: dict[str, str]) -> Job:
    data: dict[str, Any] = {}
    for name, value in raw.items():
        if name in _JSON_FIELDS:
            data[name] = json.loads(value) if value else None
        elif name in _TIME_FIELDS:
            data[name] = datetime.fromtimestamp(float(value), tz=timezone.utc) if value else None
        elif value == "" and name in ("idempotency_key", "webhook_url", "webhook_delivery", "worker"):
            data[name] = None
        else:
            data[name] = value
    if data.get("labels") is None:
        data["labels"] = {}
    if data.get("params") is None:
        data["params"] = {}
    if data.get("review_log") is None:
        data.pop("review_log", None)
    for internal in _INTERNAL_FIELDS:
        data.pop(internal, None)
    return Job.model_validate(data)


_INTERNAL_FIELDS = ("body_hash", "queue_message", "webhook_attempts", "attempt", "last_attempt", "budget_base",
                    "workflow", "enqueued_at", "run_span",
                    "message_queue", "message_at", *TRACE_HEADERS)


def compact_fields(fields: dict[str, str]) -> dict[str, str]:
    """Leave out what decode_job (and every script) reads back as its default anyway:
    empty values, empty JSON objects, zero counters. A new job's hash holds only what
    says something."""
    return {name: value for name, value in fields.items()
            if value not in ("", "{}") and not (name in _ZERO_FIELDS and float(value) == 0)}


_ZERO_FIELDS = ("progress", "attempts")  # counters a script reads as 0 when absent


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[0::2], flat[1::2]))


@dataclass(frozen=True)
class RunState:
    """A job with what only the worker side needs: the live attempt's token and the budget's start."""

    job: Job
    token: str  # the live attempt's ('' when the job is not running)
    budget_base: int
    last_token: str = ""  # the attempt that last left "running"
    enqueued_at: float | None = None  # when its message was last queued (a retry's due time); None: at creation
    run_span: str = ""  # the trace context (traceparent) of the job's latest run, '' when it was not traced

    @property
    def retries_done(self) -> int:
        """Attempts since the last manual retry, less the first one."""
        return max(0, self.job.attempts - self.budget_base - 1)


def decode_run(raw: dict[str, str]) -> RunState:
    return RunState(job=decode_job(raw), token=raw.get("attempt", ""), budget_base=int(raw.get("budget_base") or 0),
                    last_token=raw.get("last_attempt", ""),
                    enqueued_at=float(raw["enqueued_at"]) if raw.get("enqueued_at") else None,
                    run_span=raw.get("run_span", ""))


@dataclass(frozen=True)
class Claim:
    """A claim's answer. ``run``: this process runs attempt ``token``; ``busy``: another
    run holds a live lease; ``lost``: the last run's lease lapsed with the attempt budget
    spent (the caller fails the job); ``skip``: nothing to run (why in ``detail``)."""

    outcome: str
    detail: str = ""
    token: str = ""
    state: RunState | None = None
    previous_span: str = ""  # the trace context the job's previous attempt ran in ('' when none was traced)


# --- Lua scripts ---------------------------------------------------------------

# Status index keys are passed in this order after the fixed KEYS of each script.
_STATUS_ORDER = tuple(JobStatus)
_STATUS_LUA = """
local function status_key(status, first)
  local order = {%s}
  for i, name in ipairs(order) do
    if name == status then return KEYS[first + i - 1] end
  end
  return nil
end

-- A job's tenant indexes: the prefix is the one _TENANT_PREFIX, the tenant is on the record.
local function tenant_index(job_key, suffix)
  return '%s' .. (redis.call('HGET', job_key, 'tenant') or '') .. ':' .. suffix
end

local function move_tenant_status(job_key, id, from, to, score)
  redis.call('ZREM', tenant_index(job_key, 'status:' .. from), id)
  redis.call('ZADD', tenant_index(job_key, 'status:' .. to), score, id)
end
""" % (", ".join(f"'{status.value}'" for status in _STATUS_ORDER), _TENANT_PREFIX)

# Builds the SSE event for a status change from the record, after the change.
_EVENT_LUA = """
local function publish_event(job_key, channel, id, at)
  local row = redis.call('HMGET', job_key, 'status', 'progress', 'stage', 'message')
  redis.call('PUBLISH', channel, cjson.encode({job_id = id, status = row[1], progress = tonumber(row[2]) or 0,
                                               stage = row[3] or '', message = row[4] or '', at = at}))
end
"""

# KEYS: job, queue list, idem key ('' for none), all index, kind index, status indexes...
# ARGV: id, idem value, idem ttl, message, score, field/value pairs...
_SUBMIT = _STATUS_LUA + """
if KEYS[3] ~= '' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {'exists', existing} end
end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
redis.call('ZADD', status_key('queued', 6), ARGV[5], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[1])
local kind = redis.call('HGET', KEYS[1], 'kind')
redis.call('ZADD', tenant_index(KEYS[1], 'jobs'), ARGV[5], ARGV[1])
redis.call('ZADD', tenant_index(KEYS[1], 'status:queued'), ARGV[5], ARGV[1])
redis.call('ZADD', tenant_index(KEYS[1], 'kind:' .. kind), ARGV[5], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[4])
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'EX', tonumber(ARGV[3])) end
return {'created', ''}
"""

# The one status change. Checks the move (and, when a token is given, that it is the
# live attempt's; when ``lapsed_before`` is given, that the lease lapsed before it),
# then moves indexes, in-flight, lease, delayed entry and dead-letter together,
# publishes the event and returns the new record.
# KEYS: job, all index, deadletter, delayed, webhooks, leases, events channel, status indexes...,
#       expiry index, workflow due set (the last two)
# ARGV: 1 id, 2 target, 3 allowed sources (",a,b,"), 4 ttl (0 = keep), 5 deadletter (0/1),
#       6 message to queue ('' = none), 7 due time for it ('' = push now), 8 token ('' = any),
#       9 lapsed_before ('' = no lease check), 10 in-flight key prefix, 11 event time (ISO),
#       12 now (epoch s), 13 the waiting message to take back on cancel ('' = none), 14.. field/value pairs
_TRANSITION = _STATUS_LUA + _EVENT_LUA + """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {'missing', ''} end
if not string.find(ARGV[3], ',' .. current .. ',', 1, true) then return {'conflict', current} end
if ARGV[8] ~= '' and redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[8] then return {'stale', current} end
if ARGV[9] ~= '' then
  local lease = redis.call('ZSCORE', KEYS[6], ARGV[1])
  if lease and tonumber(lease) > tonumber(ARGV[9]) then return {'alive', current} end
end
local fields = {'status', ARGV[2]}
for i = 14, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
-- The expiry index entry names the status it expires in (expiry.expiry_member); it is the
-- second-to-last key (the workflow due set is the last).
local expiry_tail = ' ' .. (redis.call('HGET', KEYS[1], 'kind') or '') .. ' ' .. (redis.call('HGET', KEYS[1], 'tenant') or '')
local score = redis.call('ZSCORE', KEYS[2], ARGV[1]) or 0
redis.call('ZREM', status_key(current, 8), ARGV[1])
redis.call('ZADD', status_key(ARGV[2], 8), score, ARGV[1])
move_tenant_status(KEYS[1], ARGV[1], current, ARGV[2], score)
local queue = redis.call('HGET', KEYS[1], 'queue')
if ARGV[2] ~= 'running' then
  if queue then redis.call('HDEL', ARGV[10] .. queue, ARGV[1]) end
  redis.call('ZREM', KEYS[6], ARGV[1])
  local token = redis.call('HGET', KEYS[1], 'attempt')
  if token and token ~= '' then redis.call('HSET', KEYS[1], 'last_attempt', token) end
  redis.call('HDEL', KEYS[1], 'attempt')
end
redis.call('ZREM', KEYS[#KEYS - 1], ARGV[1] .. ' ' .. current .. expiry_tail)
if tonumber(ARGV[4]) > 0 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  redis.call('ZADD', KEYS[#KEYS - 1], tonumber(ARGV[12]) + tonumber(ARGV[4]), ARGV[1] .. ' ' .. ARGV[2] .. expiry_tail)
  local hook = redis.call('HGET', KEYS[1], 'webhook_url')
  if hook and hook ~= '' then
    redis.call('ZADD', KEYS[5], ARGV[12], ARGV[1])
    redis.call('HSET', KEYS[1], 'webhook_attempts', '0')
  end
  -- A workflow step ended: in the same call, it is due for the engine (KEYS' last entry).
  local flow = redis.call('HGET', KEYS[1], 'workflow')
  if flow and flow ~= '' then redis.call('ZADD', KEYS[#KEYS], ARGV[12], ARGV[1]) end
else
  redis.call('PERSIST', KEYS[1])
end
if ARGV[5] == '1' then
  redis.call('ZADD', KEYS[3], ARGV[12], ARGV[1])
  redis.call('ZADD', tenant_index(KEYS[1], 'review'), ARGV[12], ARGV[1])
end
if ARGV[2] == 'queued' then
  -- A manual retry: out of the dead-letter list, and a fresh retry budget.
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', tenant_index(KEYS[1], 'review'), ARGV[1])
  redis.call('HSET', KEYS[1], 'budget_base', redis.call('HGET', KEYS[1], 'attempts') or '0')
end
if ARGV[2] == 'cancelled' and current == 'queued' and queue and ARGV[13] ~= '' then
  -- The caller rebuilt the waiting message from the record's stamp (no copy is kept).
  redis.call('LREM', queue, 1, ARGV[13])
end
if ARGV[2] ~= 'retrying' then redis.call('ZREM', KEYS[4], ARGV[1]) end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'enqueued_at', ARGV[7] ~= '' and ARGV[7] or ARGV[12])
  if ARGV[7] ~= '' then
    -- Only a retry waiting in the delayed set keeps its message: promotion pushes it.
    redis.call('HSET', KEYS[1], 'queue_message', ARGV[6])
    redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1])
  else
    redis.call('HDEL', KEYS[1], 'queue_message')
    redis.call('LPUSH', queue, ARGV[6])
  end
end
publish_event(KEYS[1], KEYS[7], ARGV[1], ARGV[11])
return {'ok', current, redis.call('HGETALL', KEYS[1])}
"""

# A worker takes a delivered job. A queued or retrying job starts a new attempt. A
# running job is taken over only when its run's lease has lapsed (the run is gone),
# never while it lives - not by another pod, not by another process of the same pod -
# and only within the attempt budget.
# KEYS: job, all index, leases, delayed, events channel, status indexes...
# ARGV: 1 id, 2 worker, 3 now (epoch s), 4 new token, 5 lease until, 6 max attempts,
#       7 in-flight key prefix, 8 event time (ISO), 9 this run's trace context ('' = untraced)
# A run's trace context stays on the job (run_span), so the next attempt can link to it.
_CLAIM = _STATUS_LUA + _EVENT_LUA + """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'skip', 'missing'} end
if status == 'running' then
  local lease = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if lease and tonumber(lease) > tonumber(ARGV[3]) then return {'busy', lease} end
  local used = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0') - tonumber(redis.call('HGET', KEYS[1], 'budget_base') or '0')
  if used >= tonumber(ARGV[6]) then
    return {'lost', redis.call('HGET', KEYS[1], 'attempt') or '', redis.call('HGETALL', KEYS[1])}
  end
elseif status ~= 'queued' and status ~= 'retrying' then
  return {'skip', status}
end
local queue = redis.call('HGET', KEYS[1], 'queue')
local previous = redis.call('HGET', KEYS[1], 'worker')
if status == 'running' and queue and previous then redis.call('HDEL', ARGV[7] .. queue, ARGV[1]) end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local previous_span = redis.call('HGET', KEYS[1], 'run_span') or ''
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[2], 'started_at', ARGV[3], 'stage', 'starting',
           'progress', '0', 'attempt', ARGV[4], 'run_span', ARGV[9] or '')
redis.call('HDEL', KEYS[1], 'queue_message')
local score = redis.call('ZSCORE', KEYS[2], ARGV[1]) or 0
redis.call('ZREM', status_key(status, 6), ARGV[1])
redis.call('ZADD', status_key('running', 6), score, ARGV[1])
move_tenant_status(KEYS[1], ARGV[1], status, 'running', score)
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HSET', ARGV[7] .. queue, ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
publish_event(KEYS[1], KEYS[5], ARGV[1], ARGV[8])
return {'run', status, redis.call('HGETALL', KEYS[1]), previous_span}
"""

# The run renews its lease; 0 tells it that it is no longer the live attempt (cancelled,
# retried, taken over): it must stop.
# KEYS: job, leases  ARGV: id, token, lease until
_RENEW = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[2] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""

# Progress of the live attempt only.
# KEYS: job, events channel  ARGV: token, progress, stage, message, event json
_PROGRESS = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'status') ~= 'running' then
  return 0
end
redis.call('HSET', KEYS[1], 'progress', ARGV[2], 'stage', ARGV[3], 'message', ARGV[4])
redis.call('PUBLISH', KEYS[2], ARGV[5])
return 1
"""

# A cancelled run acknowledges the cancel, only if no later attempt exists.
# KEYS: job, events channel  ARGV: id, token, event time
_ACK_CANCEL = _EVENT_LUA + """
if redis.call('HGET', KEYS[1], 'status') ~= 'cancelled' or redis.call('HGET', KEYS[1], 'last_attempt') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], 'stage', 'cancelled')
publish_event(KEYS[1], KEYS[2], ARGV[1], ARGV[3])
return 1
"""


# Move due retries (zset rf:delayed, score = due time) onto their queues. Atomic, so
# every worker and beat may run it without pushing a job twice.
# KEYS: delayed  ARGV: now, max count, job key prefix
_PROMOTE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[3] .. id
  local message = redis.call('HGET', key, 'queue_message')
  local queue = redis.call('HGET', key, 'queue')
  if message and queue and redis.call('HGET', key, 'status') == 'retrying' then
    redis.call('LPUSH', queue, message)
    moved = moved + 1
  end
end
return moved
"""


# Move a run of a queue's oldest messages to another queue if they are still the
# oldest (compare-and-move), and record each job's new queue. Each message goes in by
# the time it was first queued, walking in from the consume end (kombu pops from the
# right): jobs aged in an earlier pass, being older, stay ahead of those aged later,
# and an aged job goes ahead of every younger job of its new queue. Nothing moves into
# a paused queue: the pause holds what it holds, not more.
# KEYS: source, destination, paused set
# ARGV: n, n messages oldest first, n job ids, n enqueue times (same order), job key prefix, scan limit
_MOVE_TAIL = """
local n = tonumber(ARGV[1])
if redis.call('SISMEMBER', KEYS[3], KEYS[2]) == 1 then return 0 end
local tail = redis.call('LRANGE', KEYS[1], -n, -1)
if #tail ~= n then return 0 end
for i = 1, n do
  if tail[n - i + 1] ~= ARGV[1 + i] then return 0 end
end
redis.call('LTRIM', KEYS[1], 0, -n - 1)
local prefix, limit = ARGV[2 + 3 * n], tonumber(ARGV[3 + 3 * n])
for i = 1, n do
  local message, queued_at = ARGV[1 + i], tonumber(ARGV[1 + 2 * n + i])
  local length = redis.call('LLEN', KEYS[2])
  local placed = false
  local last_older = nil
  local index = -1
  while -index <= length and -index <= limit do
    local other = redis.call('LINDEX', KEYS[2], index)
    local ok, decoded = pcall(cjson.decode, other)
    local other_at = ok and type(decoded) == 'table' and type(decoded.headers) == 'table'
                     and tonumber(decoded.headers.rf_enqueued_at) or nil
    if other_at == nil or other_at > queued_at then
      redis.call('LINSERT', KEYS[2], 'AFTER', other, message)
      placed = true
      break
    end
    last_older = other
    index = index - 1
  end
  if not placed then
    if last_older and -index <= length then
      redis.call('LINSERT', KEYS[2], 'BEFORE', last_older, message)
    else
      redis.call('LPUSH', KEYS[2], message)
    end
  end
  local key = prefix .. ARGV[1 + n + i]
  if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'queue', KEYS[2]) end
end
return n
"""


# A waiting job whose message is nowhere (not in its queue, not delayed, not being
# delivered) gets it back. Every check again here, atomically: still waiting, the same
# message (its stamp's time; the caller rebuilt it from that stamp), not delayed.
# KEYS: job, delayed  ARGV: id, message, its stamp time
_REQUEUE_LOST = """
local status = redis.call('HGET', KEYS[1], 'status')
if status ~= 'queued' and status ~= 'retrying' then return 0 end
if (redis.call('HGET', KEYS[1], 'message_at') or '') ~= ARGV[3] then return 0 end
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('LPUSH', redis.call('HGET', KEYS[1], 'queue'), ARGV[2])
return 1
"""


# A batch: every job stored with its indexes and queue message, plus the batch record,
# in one call, or nothing (an idempotent replay). Redis runs a script whole, and every
# check (the idempotency key) comes before the first write, so there is no half batch.
# KEYS: idem ('' for none), batch, batch jobs, all index, status indexes..., then per job:
#       job, queue list, kind index
# ARGV: 1 idem value, 2 ttl (idem and batch record), 3 job count, 4 batch field count,
#       batch field/value pairs, then per job: id, score, message, field count, field/value pairs
_SUBMIT_BATCH = _STATUS_LUA + """
if KEYS[1] ~= '' then
  local existing = redis.call('GET', KEYS[1])
  if existing then return {'exists', existing} end
end
local first_job_key = 5 + %d  -- after idem, batch, batch jobs, all and the status indexes
local at = 5
local batch_fields = {}
for i = 1, tonumber(ARGV[4]) do batch_fields[i] = ARGV[at]; at = at + 1 end
redis.call('HSET', KEYS[2], unpack(batch_fields))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2]))
for j = 0, tonumber(ARGV[3]) - 1 do
  local job, queue, kind_index = KEYS[first_job_key + 3 * j], KEYS[first_job_key + 3 * j + 1], KEYS[first_job_key + 3 * j + 2]
  local id, score, message, count = ARGV[at], ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3])
  at = at + 4
  local fields = {}
  for i = 1, count do fields[i] = ARGV[at]; at = at + 1 end
  -- What _SUBMIT does for one job.
  redis.call('HSET', job, unpack(fields))
  redis.call('ZADD', KEYS[4], score, id)
  redis.call('ZADD', status_key('queued', 5), score, id)
  redis.call('ZADD', kind_index, score, id)
  local kind = redis.call('HGET', job, 'kind')
  redis.call('ZADD', tenant_index(job, 'jobs'), score, id)
  redis.call('ZADD', tenant_index(job, 'status:queued'), score, id)
  redis.call('ZADD', tenant_index(job, 'kind:' .. kind), score, id)
  redis.call('LPUSH', queue, message)
  redis.call('RPUSH', KEYS[3], id)
end
redis.call('EXPIRE', KEYS[3], tonumber(ARGV[2]))
if KEYS[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2])) end
return {'created', ''}
""" % len(_STATUS_ORDER)


class JobNotFound(KeyError):
    pass


class BatchNotFound(KeyError):
    pass


class TransitionConflict(RuntimeError):
    def __init__(self, job_id: str, current: str, target: str):
        super().__init__(f"job {job_id} is {current}; it cannot move to {target}")
        self.current = current
        self.target = target


class IdempotencyConflict(RuntimeError):
    def __init__(self, job_id: str):
        super().__init__("Idempotency-Key was already used with a different request body")
        self.job_id = job_id


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_cursor: str | None


@dataclass(frozen=True)
class QueueStats:
    name: str
    depth: int
    in_flight: int
    paused: bool
    oldest_age_s: float | None = None


def encode_cursor(score: int, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score}:{job_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        score, job_id = base64.urlsafe_b64decode(padded.encode()).decode().split(":", 1)
        return int(score), job_id
    except (ValueError, UnicodeDecodeError):
        raise ValueError("invalid cursor") from None


T = TypeVar("T")


def newest_first(redis: Any, index: str, *, record_key: Callable[[str], str], decode: Callable[[dict], T],
                 keep: Callable[[T], bool], limit: int, cursor: str | None) -> tuple[list[T], str | None]:
    """One page of the records an index (zset scored by creation) names, newest first,
    those ``keep`` accepts, and the cursor of the next page. Entries whose record has
    expired are dropped from the index on the way (retention). Jobs and workflows list
    through this one walk."""
    max_score: int | str = "+inf"
    after_id: str | None = None
    if cursor:
        max_score, after_id = decode_cursor(cursor)
    found: list[tuple[int, str, T]] = []
    stale: list[str] = []
    batch = max(limit + 1, 20)
    offset = 0
    while len(found) <= limit:
        rows = redis.zrevrangebyscore(index, max_score, "-inf", start=offset, num=batch, withscores=True)
        if not rows:
            break
        offset += len(rows)
        pipe = redis.pipeline(transaction=False)
        for member, _ in rows:
            pipe.hgetall(record_key(member))
        for (member, score), raw in zip(rows, pipe.execute()):
            score = int(score)
            # Equal scores come in descending member order; resume after the cursor.
            if after_id is not None and score == max_score and member >= after_id:
                continue
            if not raw:
                stale.append(member)
                continue
            record = decode(raw)
            if keep(record):
                found.append((score, member, record))
        if len(rows) < batch:
            break
    if stale:
        redis.zrem(index, *stale)
    page = found[:limit]
    next_cursor = encode_cursor(page[-1][0], page[-1][1]) if len(found) > limit else None
    return [record for _, _, record in page], next_cursor


class StaleAttempt(RuntimeError):
    """A write by a run that is no longer the job's live attempt."""

    def __init__(self, job_id: str, current: str):
        super().__init__(f"job {job_id}: this run is no longer its live attempt (job is {current})")
        self.current = current


class LeaseAlive(RuntimeError):
    """Recovery found the run's lease renewed meanwhile: the run is alive."""



# --- delete and manual review ------------------------------------------------------

_REVIEW_SUFFIX = "review"


def tenant_review_index(tenant: str) -> str:
    """One tenant's jobs in review (same members and scores as DEADLETTER)."""
    return f"{_TENANT_PREFIX}{tenant}:{_REVIEW_SUFFIX}"


class NotInReview(RuntimeError):
    def __init__(self, job_id: str, current: str):
        super().__init__(f"job {job_id} is not in review (it is {current or 'dismissed or requeued'})")
        self.current = current


@dataclass(frozen=True)
class ReviewPage:
    entries: list[tuple[float, Job]]  # (when it entered review, epoch s; the job)
    next_cursor: str | None


def encode_review_cursor(score: float, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{score!r}:{job_id}".encode()).decode().rstrip("=")


def decode_review_cursor(cursor: str) -> tuple[float, str]:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        score, job_id = base64.urlsafe_b64decode(padded.encode()).decode().split(":", 1)
        return float(score), job_id
    except (ValueError, UnicodeDecodeError):
        raise ValueError("invalid cursor") from None


# Appends one action (JSON object) to the job's review log.
_REVIEW_LOG_LUA = """
local function append_review(job_key, action_json)
  local raw = redis.call('HGET', job_key, 'review_log')
  local log = {}
  if raw and raw ~= '' then log = cjson.decode(raw) end
  log[#log + 1] = cjson.decode(action_json)
  redis.call('HSET', job_key, 'review_log', cjson.encode(log))
end

-- A job the caller may see: it exists and, when a tenant is named, belongs to it.
local function visible(job_key, tenant)
  if redis.call('EXISTS', job_key) == 0 then return false end
  return tenant == '' or redis.call('HGET', job_key, 'tenant') == tenant
end
"""

# Delete a finished job and every trace of it.
# KEYS: job, all index, review, delayed, webhooks, leases, status indexes...
# ARGV: 1 id, 2 tenant ('' = any), 3 finished statuses (a,b,c), 4 kind index prefix, 5 idempotency key prefix
_DELETE = _STATUS_LUA + _REVIEW_LOG_LUA + """
if not visible(KEYS[1], ARGV[2]) then return {'missing', ''} end
local status = redis.call('HGET', KEYS[1], 'status')
if not string.find(',' .. ARGV[3] .. ',', ',' .. status .. ',', 1, true) then return {'conflict', status} end
local kind = redis.call('HGET', KEYS[1], 'kind') or ''
local tenant = redis.call('HGET', KEYS[1], 'tenant') or ''
local idem = redis.call('HGET', KEYS[1], 'idempotency_key') or ''
for _, key in ipairs({KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], status_key(status, 7), ARGV[4] .. kind,
                      tenant_index(KEYS[1], 'jobs'), tenant_index(KEYS[1], 'status:' .. status),
                      tenant_index(KEYS[1], 'kind:' .. kind), tenant_index(KEYS[1], 'review')}) do
  redis.call('ZREM', key, ARGV[1])
end
if idem ~= '' then
  local idem_key = ARGV[5] .. tenant .. ':' .. idem
  local mapped = redis.call('GET', idem_key)
  if mapped and string.sub(mapped, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then redis.call('DEL', idem_key) end
end
local record = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return {'ok', status, record}
"""

# Requeue from review: failed and in review -> queued, out of review, fresh budget,
# changed fields, its message on its queue, the action logged, the event published.
# KEYS: job, review, all index, events channel, status indexes...
# ARGV: 1 id, 2 tenant ('' = any), 3 message, 4 action json, 5 event time, 6.. field/value pairs
_REVIEW_REQUEUE = _STATUS_LUA + _EVENT_LUA + _REVIEW_LOG_LUA + """
if not visible(KEYS[1], ARGV[2]) then return {'missing', ''} end
local status = redis.call('HGET', KEYS[1], 'status')
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return {'not_in_review', status} end
if status ~= 'failed' then return {'conflict', status} end
local fields = {'status', 'queued'}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
append_review(KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', tenant_index(KEYS[1], 'review'), ARGV[1])
local score = redis.call('ZSCORE', KEYS[3], ARGV[1]) or 0
redis.call('ZREM', status_key('failed', 5), ARGV[1])
redis.call('ZADD', status_key('queued', 5), score, ARGV[1])
move_tenant_status(KEYS[1], ARGV[1], 'failed', 'queued', score)
redis.call('PERSIST', KEYS[1])
-- The message's stamp came with the fields (the record keeps no copy of the message).
redis.call('HSET', KEYS[1], 'budget_base', redis.call('HGET', KEYS[1], 'attempts') or '0')
redis.call('HDEL', KEYS[1], 'queue_message')
redis.call('LPUSH', redis.call('HGET', KEYS[1], 'queue'), ARGV[3])
publish_event(KEYS[1], KEYS[4], ARGV[1], ARGV[5])
return {'ok', status, redis.call('HGETALL', KEYS[1])}
"""

# Dismiss: out of review, the record kept as it is, the action logged.
# KEYS: job, review  ARGV: 1 id, 2 tenant ('' = any), 3 action json
_REVIEW_DISMISS = _STATUS_LUA + _REVIEW_LOG_LUA + """
if not visible(KEYS[1], ARGV[2]) then return {'missing', ''} end
local status = redis.call('HGET', KEYS[1], 'status')
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return {'not_in_review', status} end
append_review(KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', tenant_index(KEYS[1], 'review'), ARGV[1])
return {'ok', status, redis.call('HGETALL', KEYS[1])}
"""

# Review backlog by (kind, error type), counted where the data is.
# KEYS: review  ARGV: job key prefix, scan limit
_REVIEW_COUNTS = """
local counts, order = {}, {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)) do
  local row = redis.call('HMGET', ARGV[1] .. id, 'kind', 'error')
  if row[1] then
    local error_type = ''
    if row[2] and row[2] ~= '' then
      local ok, decoded = pcall(cjson.decode, row[2])
      if ok and type(decoded) == 'table' and type(decoded.type) == 'string' then error_type = decoded.type end
    end
    local label = row[1] .. '\\n' .. error_type
    if not counts[label] then counts[label] = 0; order[#order + 1] = {row[1], error_type, label} end
    counts[label] = counts[label] + 1
  end
end
local flat = {}
for _, item in ipairs(order) do
  flat[#flat + 1] = item[1]; flat[#flat + 1] = item[2]; flat[#flat + 1] = counts[item[3]]
end
return flat
"""

# A webhook write on a job record that may have been deleted meanwhile: never recreate it.
# KEYS: job, webhooks  ARGV: 1 id, 2 field, 3 value ('' = count one more attempt), 4 done (1: out of the due set)
_HSET_IF_EXISTS = """
if ARGV[4] == '1' then redis.call('ZREM', KEYS[2], ARGV[1]) end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[3] == '' then return redis.call('HINCRBY', KEYS[1], ARGV[2], 1) end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
"""

# The old dead-letter list becomes the review set (scored by when each job finished).
# KEYS: old list, review  ARGV: job key prefix, tenant prefix
_ADOPT_LEGACY = """
if redis.call('TYPE', KEYS[1]).ok ~= 'list' then return 0 end
local moved = 0
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local row = redis.call('HMGET', ARGV[1] .. id, 'finished_at', 'tenant')
  if row[1] then
    local at = row[1] ~= '' and row[1] or '0'
    redis.call('ZADD', KEYS[2], at, id)
    redis.call('ZADD', ARGV[2] .. (row[2] or '') .. ':review', at, id)
    moved = moved + 1
  end
end
redis.call('DEL', KEYS[1])
return moved
"""


class JobStore:
    def __init__(self, client: redis.Redis, *, retention_seconds: int = 7 * 24 * 3600):
        self.redis = client
        self.retention_seconds = retention_seconds
        self._submit = client.register_script(_SUBMIT)
        self._transition = client.register_script(_TRANSITION)
        self._claim = client.register_script(_CLAIM)
        self._renew = client.register_script(_RENEW)
        self._progress = client.register_script(_PROGRESS)
        self._ack_cancel = client.register_script(_ACK_CANCEL)
        self._promote_due = client.register_script(_PROMOTE_DUE)
        self._move_tail = client.register_script(_MOVE_TAIL)
        self._requeue_lost = client.register_script(_REQUEUE_LOST)
        self._submit_batch = client.register_script(_SUBMIT_BATCH)

    _STATUS_KEYS = [status_index(status) for status in _STATUS_ORDER]

    # -- writes -------------------------------------------------------------

    def submit(self, job: Job, message: str, *, body_hash: str = "") -> tuple[Job, bool]:
        """Store a new job and push its message atomically. Returns (job, created).

        With an idempotency key, a replay of the same body returns the first job;
        a different body raises IdempotencyConflict.
        """
        idem = idempotency_key(job.tenant, job.idempotency_key) if job.idempotency_key else ""
        fields = encode_fields(job.model_dump(exclude_none=False) | {"result": job.result, "error": job.error})
        fields["body_hash"] = body_hash
        fields = compact_fields(fields) | message_stamp(message)
        flat = [item for pair in fields.items() for item in pair]
        outcome, existing = self._submit(
            keys=[job_key(job.id), job.queue, idem, INDEX_ALL, kind_index(job.kind), *self._STATUS_KEYS],
            args=[job.id, f"{job.id} {body_hash}", self.retention_seconds, message,
                  _score(job.created_at.timestamp()), *flat],
        )
        if outcome == "created":
            return job, True
        existing_id, _, existing_hash = existing.partition(" ")
        if existing_hash != body_hash:
            raise IdempotencyConflict(existing_id)
        found = self.get(existing_id)
        return found, False

    def transition(
        self,
        job_id: str,
        target: JobStatus,
        *,
        fields: dict[str, Any] | None = None,
        dead_letter: bool = False,
        requeue_message: str | None = None,
        requeue_queue: str | None = None,
        due_at: float | None = None,
        token: str | None = None,
        lapsed_before: float | None = None,
    ) -> Job:
        """Move a job to ``target`` if the state machine allows it, in one atomic call
        that also moves indexes, in-flight, lease and delayed entries and publishes the
        event; returns the new record.

        ``token``: only if that attempt is still the live one (a run's own writes);
        raises StaleAttempt otherwise. ``requeue_message``: queue it now, or at
        ``due_at`` through the delayed set. ``lapsed_before``: only if the run's lease
        lapsed before then (recovery); raises LeaseAlive otherwise.
        ``requeue_queue`` is accepted for callers that name it; the job's own queue
        (aging may have moved it) is where the message goes.
        """
        del requeue_queue
        target = JobStatus(target)
        sources = ",".join(s.value for s in allowed_sources(target))
        ttl = self.retention_seconds if target in TERMINAL_STATUSES else 0
        encoded = encode_fields(fields or {})
        if requeue_message:
            # The new message's stamp replaces the last one (trace headers it lacks are blanked).
            encoded |= {name: "" for name in TRACE_HEADERS} | message_stamp(requeue_message)
        flat = [item for pair in encoded.items() for item in pair]
        withdraw = self._waiting_message(job_id) if target == JobStatus.cancelled else None
        now = _now()
        reply = self._transition(
            keys=[job_key(job_id), INDEX_ALL, DEADLETTER, DELAYED, WEBHOOKS, LEASES, events_channel(job_id),
                  *self._STATUS_KEYS, EXPIRES, WORKFLOW_DUE],
            args=[job_id, target.value, f",{sources},", ttl, "1" if dead_letter else "0",
                  requeue_message or "", "" if due_at is None else repr(due_at), token or "",
                  "" if lapsed_before is None else repr(lapsed_before), INFLIGHT_PREFIX, _iso_now(), repr(now),
                  withdraw or "", *flat],
        )
        outcome, current = reply[0], reply[1]
        if outcome == "missing":
            raise JobNotFound(job_id)
        if outcome == "conflict":
            raise TransitionConflict(job_id, current, target.value)
        if outcome == "stale":
            raise StaleAttempt(job_id, current)
        if outcome == "alive":
            raise LeaseAlive(job_id)
        return decode_job(_pairs(reply[2]))

    def _waiting_message(self, job_id: str, record: dict[str, str] | None = None) -> str | None:
        """The queue message of a waiting job, rebuilt from its record's stamp (a record
        written before stamps existed still holds its copy in ``queue_message``)."""
        record = self.redis.hgetall(job_key(job_id)) if record is None else record
        kind = KINDS.get(record.get("kind", ""))
        rebuilt = message_from_record(kind, record) if kind is not None and record.get("id") else None
        return rebuilt or record.get("queue_message")

    def schedule_retry(self, job_id: str, token: str | None, message: str, delay_s: float,
                       fields: dict[str, Any]) -> Job:
        """running -> retrying and the message waiting in rf:delayed until due: one atomic call."""
        return self.transition(job_id, JobStatus.retrying, fields=fields, requeue_message=message,
                               due_at=_now() + delay_s, token=token)

    def promote_due_retries(self, limit: int = 100) -> int:
        return int(self._promote_due(keys=[DELAYED], args=[repr(_now()), limit, job_key("")]))

    def claim(self, job_id: str, worker: str, *, max_attempts: int, lease_s: float, pid: int | None = None,
              span_context: str = "") -> Claim:
        """A worker process takes a delivered job (see _CLAIM). On ``run`` the answer
        carries the attempt token that every later write of the run must name, and the
        previous attempt's trace context (``span_context`` is this run's)."""
        now = _now()
        token = new_attempt_token(pid if pid is not None else os.getpid())
        reply = self._claim(
            keys=[job_key(job_id), INDEX_ALL, LEASES, DELAYED, events_channel(job_id), *self._STATUS_KEYS],
            args=[job_id, worker, repr(now), token, repr(now + lease_s), max_attempts, INFLIGHT_PREFIX, _iso_now(),
                  span_context],
        )
        outcome = reply[0]
        if outcome == "run":
            return Claim("run", reply[1], token, decode_run(_pairs(reply[2])), previous_span=reply[3])
        if outcome == "lost":
            return Claim("lost", "lease lapsed, attempts spent", reply[1], decode_run(_pairs(reply[2])))
        return Claim(outcome, reply[1])

    def renew_lease(self, job_id: str, token: str, lease_s: float) -> bool:
        """Extend the live attempt's lease; False: this run is no longer the live attempt."""
        return bool(self._renew(keys=[job_key(job_id), LEASES], args=[job_id, token, repr(_now() + lease_s)]))

    def record_progress(self, job_id: str, token: str, progress: float, stage: str = "", message: str = "") -> bool:
        """Progress of the live attempt; False (nothing written) for a stale run."""
        event = ProgressEvent(job_id=job_id, status=JobStatus.running, progress=round(progress, 2), stage=stage,
                              message=message, at=datetime.now(timezone.utc))
        return bool(self._progress(keys=[job_key(job_id), events_channel(job_id)],
                                   args=[token, str(event.progress), stage, message, event.model_dump_json()]))

    def acknowledge_cancel(self, job_id: str, token: str) -> bool:
        """A cancelled run says it stopped; False when a later attempt exists (cancel, then retry)."""
        return bool(self._ack_cancel(keys=[job_key(job_id), events_channel(job_id)], args=[job_id, token, _iso_now()]))

    def is_live_attempt(self, job_id: str, token: str) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(job_key(job_id), "attempt")
        pipe.hget(job_key(job_id), "status")
        attempt, status = pipe.execute()
        return attempt == token and status == JobStatus.running.value

    def run_state(self, job_id: str) -> RunState:
        raw = self.redis.hgetall(job_key(job_id))
        if not raw:
            raise JobNotFound(job_id)
        return decode_run(raw)

    def lapsed_leases(self, now: float | None = None, limit: int = 500) -> list[str]:
        """Running jobs whose run stopped renewing its lease (oldest lapse first)."""
        return self.redis.zrangebyscore(LEASES, "-inf", repr(now if now is not None else _now()), start=0, num=limit)

    def drop_lease(self, job_id: str) -> None:
        """Forget a lease entry whose job is no longer running (it expired or was rewritten)."""
        self.redis.zrem(LEASES, job_id)

    # -- webhook deliveries (the due set and the job's delivery fields) -------------

    def claim_due_webhooks(self, now: float, hold_until: float, limit: int = 50) -> list[str]:
        """Job ids whose webhook is due, each pushed to ``hold_until`` so that two
        senders never post the same one at once (a dead sender's claim comes due again)."""
        claimed = []
        for job_id in self.redis.zrangebyscore(WEBHOOKS, "-inf", now, start=0, num=limit):
            if self.redis.zadd(WEBHOOKS, {job_id: hold_until}, xx=True, gt=True, ch=True):
                claimed.append(job_id)
        return claimed

    def count_webhook_attempt(self, job_id: str) -> int:
        # Only on a record that still exists: a job deleted mid-delivery stays deleted.
        return int(self._script("webhook_field", _HSET_IF_EXISTS)(
            keys=[job_key(job_id), WEBHOOKS], args=[job_id, "webhook_attempts", "", "0"]))

    def webhook_done(self, job_id: str, outcome: str) -> None:
        """No more attempts: ``outcome`` ("delivered", or why it was given up) goes on the job."""
        self._script("webhook_field", _HSET_IF_EXISTS)(
            keys=[job_key(job_id), WEBHOOKS], args=[job_id, "webhook_delivery", outcome, "1"])

    def webhook_retry_at(self, job_id: str, when: float) -> None:
        self.redis.zadd(WEBHOOKS, {job_id: when})

    def forget_webhook(self, job_id: str) -> None:
        self.redis.zrem(WEBHOOKS, job_id)

    def publish_status(self, job: Job) -> None:
        """Tell SSE listeners about a job's state; status changes publish their own event."""
        event = ProgressEvent(job_id=job.id, status=job.status, progress=job.progress, stage=job.stage,
                              message=job.message, at=datetime.now(timezone.utc))
        self.redis.publish(events_channel(job.id), event.model_dump_json())

    # -- reads ----------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        raw = self.redis.hgetall(job_key(job_id))
        if not raw:
            raise JobNotFound(job_id)
        return decode_job(raw)

    @staticmethod
    async def get_async(async_client, job_id: str) -> Job:
        """The same read on an asyncio client: the API's hottest path skips a thread hop."""
        raw = await async_client.hgetall(job_key(job_id))
        if not raw:
            raise JobNotFound(job_id)
        return decode_job(raw)

    def status_of(self, job_id: str) -> JobStatus | None:
        value = self.redis.hget(job_key(job_id), "status")
        return JobStatus(value) if value else None

    def list(
        self,
        *,
        status: JobStatus | None = None,
        kind: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        tenant: str | None = None,
    ) -> Page:
        """Newest first. Filters by one index and checks the other on the records.

        With a tenant, only that tenant's indexes are read: its listing costs the
        same however many jobs other tenants have."""
        if tenant is not None:
            index = (tenant_status_index(tenant, status) if status else tenant_kind_index(tenant, kind) if kind
                     else tenant_index(tenant))
        else:
            index = status_index(status) if status else kind_index(kind) if kind else INDEX_ALL
        jobs, next_cursor = newest_first(
            self.redis, index, record_key=job_key, decode=decode_job, limit=limit, cursor=cursor,
            keep=lambda job: not ((status and job.status != status) or (kind and job.kind != kind)
                                  or (tenant is not None and job.tenant != tenant)))
        return Page(jobs=jobs, next_cursor=next_cursor)

    def dead_letter(self, limit: int = 100) -> list[str]:
        """Ids of jobs that failed for good (in review), newest first."""
        return self.redis.zrevrange(DEADLETTER, 0, limit - 1)

    def dead_letter_size(self) -> int:
        return int(self.redis.zcard(DEADLETTER))

    def counts_by_status(self) -> dict[str, int]:
        pipe = self.redis.pipeline(transaction=False)
        for status in JobStatus:
            pipe.zcard(status_index(status))
        return {status.value: count for status, count in zip(JobStatus, pipe.execute())}

    def counts_by_kind(self, kinds: Iterable[str]) -> dict[str, int]:
        kinds = list(kinds)
        pipe = self.redis.pipeline(transaction=False)
        for kind in kinds:
            pipe.zcard(kind_index(kind))
        return dict(zip(kinds, pipe.execute()))

    # -- queues -----------------------------------------------------------------

    def queue_stats(self, names: list[str]) -> list[QueueStats]:
        """Depth (every list a queue uses), in-flight and paused, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            for key in queue_names.redis_list_keys(name):
                pipe.llen(key)
            pipe.hlen(inflight_key(name))
            pipe.lindex(name, -1)  # the oldest waiting message (kombu pops from the right)
        pipe.smembers(PAUSED)
        results = pipe.execute()
        paused = results.pop()
        per_queue = len(queue_names.redis_list_keys(names[0])) + 2 if names else 0
        stats: list[QueueStats] = []
        for i, name in enumerate(names):
            chunk = results[i * per_queue:(i + 1) * per_queue]
            depth = sum(chunk[:-2])
            oldest = _message_age_s(chunk[-1])
            stats.append(QueueStats(name=name, depth=depth, in_flight=chunk[-2], paused=name in paused,
                                    oldest_age_s=oldest))
        return stats

    def in_paused_queue(self, job_id: str) -> bool:
        """Whether the queue a job waits in now (aging may have moved it) is paused; one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(job_key(job_id), "queue")
        pipe.smembers(PAUSED)
        queue, paused = pipe.execute()
        return queue in paused

    def paused_queues(self) -> set[str]:
        return set(self.redis.smembers(PAUSED))

    def set_paused(self, queue: str, paused: bool) -> None:
        if paused:
            self.redis.sadd(PAUSED, queue)
        else:
            self.redis.srem(PAUSED, queue)

    def in_flight(self, queue: str) -> dict[str, str]:
        """job id -> pod running it."""
        return self.redis.hgetall(inflight_key(queue))

    # -- workers ----------------------------------------------------------------

    def heartbeat(self, name: str, info: dict[str, str], ttl_s: float) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(worker_key(name), mapping=info | {"seen_at": repr(_now())})
        pipe.expire(worker_key(name), max(1, int(ttl_s)))
        pipe.zadd(WORKERS, {name: _now()})
        pipe.execute()

    def forget_worker(self, name: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(worker_key(name))
        pipe.zrem(WORKERS, name)
        pipe.execute()

    def workers(self) -> list[dict[str, str]]:
        names = self.redis.zrange(WORKERS, 0, -1)
        if not names:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(worker_key(name))
        alive = []
        gone = []
        for name, info in zip(names, pipe.execute()):
            if info:
                alive.append(info | {"name": name})
            else:
                gone.append(name)
        if gone:
            self.redis.zrem(WORKERS, *gone)
        return alive

    # -- maintenance ----------------------------------------------------------------

    def oldest_message(self, queue: str) -> str | None:
        return self.redis.lindex(queue, -1)

    def move_oldest(self, source: str, destination: str, messages: list[str], job_ids: list[str],
                    queued_at: list[float], scan_limit: int = 1000) -> int:
        """Move ``messages`` (the queue's oldest, oldest first) if unchanged and the
        destination is not paused; returns how many moved."""
        return int(self._move_tail(keys=[source, destination, PAUSED],
                                   args=[len(messages), *messages, *job_ids, *map(repr, queued_at),
                                         job_key(""), scan_limit]))

    def waiting_job_ids(self) -> list[str]:
        """Queued or retrying jobs: each should have a message somewhere."""
        return self.redis.zrange(status_index(JobStatus.queued), 0, -1) + \
            self.redis.zrange(status_index(JobStatus.retrying), 0, -1)

    def messages_cover_waiting(self, queues: Iterable[str], delivery_grace_s: float) -> bool:
        """Whether there are at least as many messages (queued, delayed, or delivered less
        than ``delivery_grace_s`` ago) as waiting jobs: counters only, a few commands
        whatever the number of jobs. When they do, no message can be missing unless
        stray messages make up for it, which the occasional full check catches."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(status_index(JobStatus.queued))
        pipe.zcard(status_index(JobStatus.retrying))
        for queue in queues:
            for key in queue_names.redis_list_keys(queue):
                pipe.llen(key)
        pipe.zcard(DELAYED)
        pipe.zcount(KOMBU_UNACKED_INDEX, repr(_now() - delivery_grace_s), "+inf")
        queued, retrying, *messages = pipe.execute()
        return sum(messages) >= queued + retrying

    def job_ids_with_a_message(self, queues: Iterable[str], delivery_grace_s: float) -> set[str]:
        """Jobs whose message is in a queue (any of its lists), in the delayed set, or
        was delivered less than ``delivery_grace_s`` ago (kombu's unacked hash). A waiting
        job's delivery older than that is one whose consumer died before claiming it and
        could not put it back (Redis was down): kombu would restore it only after the
        visibility timeout, hours later."""
        pipe = self.redis.pipeline(transaction=False)
        for queue in queues:
            for key in queue_names.redis_list_keys(queue):
                pipe.lrange(key, 0, -1)
        pipe.zrange(DELAYED, 0, -1)
        pipe.hgetall(KOMBU_UNACKED)
        pipe.zrangebyscore(KOMBU_UNACKED_INDEX, repr(_now() - delivery_grace_s), "+inf")
        *lists, delayed, unacked, recent_tags = pipe.execute()
        found = {job_id for raw in (m for messages in lists for m in messages) if (job_id := message_task_id(raw))}
        found.update(delayed)
        recent = set(recent_tags)
        found.update(job_id for tag, raw in unacked.items() if tag in recent and (job_id := unacked_task_id(raw)))
        return found

    def requeue_lost_message(self, job_id: str) -> bool:
        """Push a waiting job's message (rebuilt from its stamp) back, if it is still
        waiting for that message and not delayed."""
        record = self.redis.hgetall(job_key(job_id))
        message = self._waiting_message(job_id, record)
        if message is None:
            return False
        return bool(self._requeue_lost(keys=[job_key(job_id), DELAYED],
                                       args=[job_id, message, record.get("message_at", "")]))

    def expire_due(self, limit: int = 500, now: float | None = None) -> tuple[int, int]:
        """One bounded expiry pass: at most ``limit`` due entries of the expiry index (see
        renderfarm.core.expiry), never a scan of all jobs. Returns (entries handled, index
        entries removed); a pass that handled ``limit`` leaves more for the next one."""
        now = _now() if now is None else now
        due = self.redis.zrangebyscore(EXPIRES, "-inf", repr(now), start=0, num=limit)
        if not due:
            return 0, 0
        pipe = self.redis.pipeline(transaction=False)
        for member in due:
            pipe.pttl(job_key(member.split(" ", 1)[0]))
        plan = plan_expiry(due, pipe.execute(), now)
        pipe = self.redis.pipeline(transaction=True)
        for job in plan.gone:
            for index in (INDEX_ALL, status_index(job.status), kind_index(job.kind), tenant_index(job.tenant),
                          tenant_status_index(job.tenant, job.status), tenant_kind_index(job.tenant, job.kind)):
                pipe.zrem(index, job.job_id)
            if job.status == JobStatus.failed.value:
                pipe.zrem(DEADLETTER, job.job_id)  # out of review too
                pipe.zrem(tenant_review_index(job.tenant), job.job_id)
        removals = len(pipe)
        for member, when in plan.rescore.items():
            pipe.zadd(EXPIRES, {member: when}, xx=True)  # xx: a retry meanwhile took the entry out
        if plan.forget:
            pipe.zrem(EXPIRES, *plan.forget)
        results = pipe.execute()
        return len(due), sum(int(n) for n in results[:removals])

    def expiry_backlog(self, now: float | None = None) -> int:
        """How many finished jobs are past their retention and not cleaned up yet."""
        return int(self.redis.zcount(EXPIRES, "-inf", repr(_now() if now is None else now)))

    def purge_expired_index_entries(self, batch: int = 500) -> int:
        """Drop index entries whose job record has expired (retention), at most ``batch``
        jobs' worth per call (expire_due), after adopting a dead-letter list an older
        release left. Returns how many entries went."""
        self.adopt_legacy_dead_letter()
        return self.expire_due(batch)[1]


    # -- batches ------------------------------------------------------------------------

    def submit_batch(self, batch_id: str, tenant: str, jobs: list[Job], messages: list[str], *,
                     idempotency_key: str | None = None, body_hash: str = "") -> tuple[str, bool]:
        """Store every job of a batch with its queue message, and the batch record, in one
        atomic call: all or none. Returns (batch id, created); with an idempotency key, a
        replay of the same body returns the first batch's id, a different body raises
        IdempotencyConflict."""
        idem = idempotency_key_for_batch(tenant, idempotency_key) if idempotency_key else ""
        keys = [idem, batch_key(batch_id), batch_jobs_key(batch_id), INDEX_ALL, *self._STATUS_KEYS]
        record = {"id": batch_id, "tenant": tenant, "count": str(len(jobs)), "created_at": repr(_now())}
        args: list[Any] = [f"{batch_id} {body_hash}", self.retention_seconds, len(jobs), 2 * len(record),
                           *[item for pair in record.items() for item in pair]]
        for job, message in zip(jobs, messages, strict=True):
            fields = compact_fields(encode_fields(job.model_dump(exclude_none=False))) | message_stamp(message)
            keys += [job_key(job.id), job.queue, kind_index(job.kind)]
            args += [job.id, _score(job.created_at.timestamp()), message, 2 * len(fields),
                     *[item for pair in fields.items() for item in pair]]
        outcome, existing = self._submit_batch(keys=keys, args=args)
        if outcome == "created":
            return batch_id, True
        existing_id, _, existing_hash = existing.partition(" ")
        if existing_hash != body_hash:
            raise IdempotencyConflict(existing_id)
        return existing_id, False

    def batch(self, batch_id: str) -> dict[str, str]:
        record = self.redis.hgetall(batch_key(batch_id))
        if not record:
            raise BatchNotFound(batch_id)
        return record

    def batch_job_ids(self, batch_id: str, offset: int = 0, limit: int = -1) -> list[str]:
        return self.redis.lrange(batch_jobs_key(batch_id), offset, -1 if limit < 0 else offset + limit - 1)

    def statuses(self, job_ids: list[str]) -> list[str | None]:
        """Each job's status (None: its record expired), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(job_key(job_id), "status")
        return pipe.execute()

    def get_many(self, job_ids: list[str]) -> list[Job | None]:
        """Each job (None: gone), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(job_key(job_id))
        return [decode_job(raw) if raw else None for raw in pipe.execute()]


    def workflow_of(self, job_id: str) -> str | None:
        """The workflow whose step this job runs (None for a plain job)."""
        return self.redis.hget(job_key(job_id), "workflow") or None

    def workflow_due(self, ended_before: float, limit: int = 200) -> list[str]:
        """Step jobs that ended before ``ended_before`` and whose workflow has not yet
        advanced past them (the engine removes each entry in its advancing call)."""
        return self.redis.zrangebyscore(WORKFLOW_DUE, "-inf", repr(ended_before), start=0, num=limit)


    # -- delete and manual review (each action one atomic call) ----------------------

    def _script(self, name: str, source: str):
        """Scripts of this section, registered on first use."""
        scripts = self.__dict__.setdefault("_section_scripts", {})
        if name not in scripts:
            scripts[name] = self.redis.register_script(source)
        return scripts[name]

    def delete(self, job_id: str, tenant: str | None = None) -> Job:
        """Remove a finished job: its record, every index entry (tenant ones too), its
        review entry, delayed/webhook/lease entries and its idempotency key mapping, in
        one atomic call. Returns the record as it was. Raises JobNotFound (also for
        another tenant's job) or TransitionConflict (the job has not finished)."""
        reply = self._script("delete", _DELETE)(
            keys=[job_key(job_id), INDEX_ALL, DEADLETTER, DELAYED, WEBHOOKS, LEASES, *self._STATUS_KEYS],
            args=[job_id, tenant or "", ",".join(s.value for s in TERMINAL_STATUSES), kind_index(""),
                  idempotency_key("", "")[:-1]],
        )
        if reply[0] == "missing":
            raise JobNotFound(job_id)
        if reply[0] == "conflict":
            raise TransitionConflict(job_id, reply[1], "deleted")
        return decode_job(_pairs(reply[2]))

    def review_requeue(self, job_id: str, *, message: str, action: dict[str, Any],
                       fields: dict[str, Any] | None = None, tenant: str | None = None) -> Job:
        """A job in review goes back to ``queued`` with a fresh retry budget, its message
        on its (maybe new) queue, the action appended to its review log: one atomic call,
        so a crash leaves it either in review or queued, never neither."""
        encoded = encode_fields(fields or {}) | {name: "" for name in TRACE_HEADERS} | message_stamp(message)
        flat = [item for pair in encoded.items() for item in pair]
        reply = self._script("review_requeue", _REVIEW_REQUEUE)(
            keys=[job_key(job_id), DEADLETTER, INDEX_ALL, events_channel(job_id), *self._STATUS_KEYS],
            args=[job_id, tenant or "", message, json.dumps(action), _iso_now(), *flat],
        )
        return self._review_reply(job_id, reply, "queued")

    def review_dismiss(self, job_id: str, *, action: dict[str, Any], tenant: str | None = None) -> Job:
        """Out of review, record kept (it stays failed and expires with retention)."""
        reply = self._script("review_dismiss", _REVIEW_DISMISS)(
            keys=[job_key(job_id), DEADLETTER], args=[job_id, tenant or "", json.dumps(action)])
        return self._review_reply(job_id, reply, "dismissed")

    @staticmethod
    def _review_reply(job_id: str, reply: list, target: str) -> Job:
        if reply[0] == "missing":
            raise JobNotFound(job_id)
        if reply[0] in ("conflict", "not_in_review"):
            raise NotInReview(job_id, reply[1])
        return decode_job(_pairs(reply[2]))

    def review_page(self, *, tenant: str | None, kind: str | None = None, error_type: str | None = None,
                    since: float | None = None, limit: int = 50, cursor: str | None = None) -> ReviewPage:
        """Jobs in review, newest failure first; ``tenant`` None reads every tenant's."""
        index = tenant_review_index(tenant) if tenant is not None else DEADLETTER
        max_score: float | str = "+inf"
        after_id: str | None = None
        if cursor:
            max_score, after_id = decode_review_cursor(cursor)
        min_score = repr(since) if since is not None else "-inf"
        found: list[tuple[float, Job]] = []
        stale: list[str] = []
        offset, batch = 0, max(limit + 1, 50)
        while len(found) <= limit:
            rows = self.redis.zrevrangebyscore(index, max_score if isinstance(max_score, str) else repr(max_score),
                                               min_score, start=offset, num=batch, withscores=True)
            if not rows:
                break
            offset += len(rows)
            pipe = self.redis.pipeline(transaction=False)
            for job_id, _ in rows:
                pipe.hgetall(job_key(job_id))
            for (job_id, score), raw in zip(rows, pipe.execute()):
                if after_id is not None and score == max_score and job_id >= after_id:
                    continue
                if not raw:
                    stale.append(job_id)
                    continue
                job = decode_job(raw)
                if (kind and job.kind != kind) or (error_type and (job.error is None or job.error.type != error_type)) \
                        or (tenant is not None and job.tenant != tenant):
                    continue
                found.append((score, job))
            if len(rows) < batch:
                break
        if stale:
            self.redis.zrem(index, *stale)
        page = found[:limit]
        next_cursor = encode_review_cursor(page[-1][0], page[-1][1].id) if len(found) > limit else None
        return ReviewPage(entries=[(score, job) for score, job in page], next_cursor=next_cursor)

    def review_backlog(self, scan_limit: int = 100_000) -> dict[tuple[str, str], int]:
        """(kind, error type) -> jobs in review, counted in Redis in one call."""
        flat = self._script("review_counts", _REVIEW_COUNTS)(keys=[DEADLETTER], args=[job_key(""), scan_limit])
        return {(flat[i], flat[i + 1]): int(flat[i + 2]) for i in range(0, len(flat), 3)}

    def adopt_legacy_dead_letter(self) -> int:
        """Move entries of the old dead-letter list into the review set (once, after an upgrade)."""
        return int(self._script("adopt_legacy", _ADOPT_LEGACY)(
            keys=[LEGACY_DEADLETTER, DEADLETTER], args=[job_key(""), _TENANT_PREFIX]))


def idempotency_key_for_batch(tenant: str, key: str) -> str:
    """A batch's Idempotency-Key lives apart from single jobs' keys of the same tenant."""
    return idempotency_key(tenant, f"batch:{key}")


# --- jobs created inside another owner's atomic call (workflow steps) ------------------

# The same writes as _SUBMIT (record, indexes, message) as a Lua function, for a caller
# whose own script creates jobs together with its own state (workflow_store.py). The
# record's fields come from ``job_record_args``, so the format keeps one owner.
# create_job(job key, queue, all index, kind index, queued index, id, score, message, fields)
CREATE_JOB_LUA = """
local function create_job(job_key, queue, all_index, kind_index, queued_index, id, score, message, fields)
  redis.call('HSET', job_key, unpack(fields))
  redis.call('ZADD', all_index, score, id)
  redis.call('ZADD', queued_index, score, id)
  redis.call('ZADD', kind_index, score, id)
  local tenant = redis.call('HGET', job_key, 'tenant') or ''
  local kind = redis.call('HGET', job_key, 'kind')
  redis.call('ZADD', '%s' .. tenant .. ':jobs', score, id)
  redis.call('ZADD', '%s' .. tenant .. ':status:queued', score, id)
  redis.call('ZADD', '%s' .. tenant .. ':kind:' .. kind, score, id)
  redis.call('LPUSH', queue, message)
end
""" % (_TENANT_PREFIX, _TENANT_PREFIX, _TENANT_PREFIX)


def job_record_args(job: Job, message: str, *, workflow: str = "") -> tuple[list[str], list[str]]:
    """(keys, args) for one ``create_job`` call: job key, queue, all/kind/queued indexes;
    id, score, message, then the encoded field pairs (count first)."""
    # As _SUBMIT stores a job: no empty fields, and the message's stamp instead of a copy.
    fields = encode_fields(job.model_dump(exclude_none=False) | {"result": job.result, "error": job.error})
    fields = compact_fields(fields) | message_stamp(message)
    if workflow:
        fields["workflow"] = workflow
    flat = [item for pair in fields.items() for item in pair]
    keys = [job_key(job.id), job.queue, INDEX_ALL, kind_index(job.kind), status_index(JobStatus.queued)]
    return keys, [job.id, str(_score(job.created_at.timestamp())), message, str(len(flat)), *flat]


def _message_age_s(raw: str | None) -> float | None:
    parsed = message_enqueued(raw) if raw else None
    if parsed is None or parsed[1] is None:
        return None
    return max(0.0, _now() - parsed[1])


__all__ = [
    "ACTIVE_STATUSES",
    "JobStore",
    "JobNotFound",
    "BatchNotFound",
    "TransitionConflict",
    "StaleAttempt",
    "LeaseAlive",
    "Claim",
    "RunState",
    "IdempotencyConflict",
    "Page",
    "QueueStats",
    "JobError",
    "JobResult",
]
