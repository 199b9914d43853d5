"""The Redis job store: one hash per job, sorted-set indexes, atomic transitions.

Key layout (all under ``rf:``):

- ``rf:job:<id>``               hash: the job's fields (JSON for nested values)
- ``rf:jobs:all``               zset: every job, scored by creation time (µs)
- ``rf:jobs:status:<status>``   zset: jobs by status, same score
- ``rf:jobs:kind:<kind>``       zset: jobs by kind, same score
- ``rf:tenant:<t>:jobs``        zset: one tenant's jobs, same score (its listing reads
  only these, and ``rf:tenant:<t>:status:<status>`` / ``rf:tenant:<t>:kind:<kind>``)
- ``rf:idem:<tenant>:<key>``    string: "<job id> <body hash>" for Idempotency-Key
- ``rf:deadletter``             list: ids of jobs that failed for good, newest first
- ``rf:inflight:<queue>``       hash: job id -> pod (HOSTNAME) for jobs taken, not done
- ``rf:paused``                 set: paused queue names
- ``rf:workers``                zset: worker name -> last heartbeat (epoch s)
- ``rf:worker:<name>``          hash: a worker's pool, queues, pod, pid (expires)
- ``rf:events:<id>``            pub/sub channel: progress events

Every status change goes through one Lua script that checks the move against
``jobs.allowed_sources`` and updates the hash and the indexes together, so no
reader ever sees a job in two statuses or a half-written job.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import redis

from renderfarm.core import queues as queue_names
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
DEADLETTER = f"{PREFIX}deadletter"
PAUSED = f"{PREFIX}paused"
WORKERS = f"{PREFIX}workers"
DELAYED = f"{PREFIX}delayed"
BEAT_HEARTBEAT = f"{PREFIX}beat"
WEBHOOKS = f"{PREFIX}webhooks"  # zset: job id -> when its webhook is due  # set by the maintenance loop, with a TTL
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
    return f"{PREFIX}inflight:{queue}"


def worker_key(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def events_channel(job_id: str) -> str:
    return f"{PREFIX}events:{job_id}"


def new_job_id() -> str:
    return uuid.uuid4().hex


def body_fingerprint(payload: dict[str, Any]) -> str:
    """A stable hash of a submit body, to tell a replay from a conflicting reuse of a key."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


def _now() -> float:
    return time.time()


def _score(ts: float) -> int:
    return int(ts * 1_000_000)


# --- encoding (pure) ---------------------------------------------------------

_JSON_FIELDS = ("params", "result", "error", "labels")
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
    for internal in ("body_hash", "queue_message", "webhook_attempts"):
        data.pop(internal, None)
    return Job.model_validate(data)


# --- Lua scripts ---------------------------------------------------------------

# KEYS: job, queue list, idem key ('' for none)
# ARGV: id, idem value, idem ttl, message, score, kind, field/value pairs...
_SUBMIT = """
if KEYS[3] ~= '' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {'exists', existing} end
end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', 'rf:jobs:all', ARGV[5], ARGV[1])
redis.call('ZADD', 'rf:jobs:status:queued', ARGV[5], ARGV[1])
redis.call('ZADD', 'rf:jobs:kind:' .. ARGV[6], ARGV[5], ARGV[1])
local tenant = redis.call('HGET', KEYS[1], 'tenant')
redis.call('ZADD', 'rf:tenant:' .. tenant .. ':jobs', ARGV[5], ARGV[1])
redis.call('ZADD', 'rf:tenant:' .. tenant .. ':status:queued', ARGV[5], ARGV[1])
redis.call('ZADD', 'rf:tenant:' .. tenant .. ':kind:' .. ARGV[6], ARGV[5], ARGV[1])
redis.call('LPUSH', KEYS[2], ARGV[4])
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], ARGV[2], 'EX', tonumber(ARGV[3])) end
return {'created', ''}
"""

# KEYS: job
# ARGV: id, target, allowed sources (",a,b,"), ttl (0 = keep), deadletter (0/1),
#       message to push ('' = none), queue list key for it, field/value pairs...
_TRANSITION = """
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {'missing', ''} end
if not string.find(ARGV[3], ',' .. current .. ',', 1, true) then return {'conflict', current} end
local fields = {'status', ARGV[2]}
for i = 8, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
local score = redis.call('ZSCORE', 'rf:jobs:all', ARGV[1]) or 0
redis.call('ZREM', 'rf:jobs:status:' .. current, ARGV[1])
redis.call('ZADD', 'rf:jobs:status:' .. ARGV[2], score, ARGV[1])
local tenant = redis.call('HGET', KEYS[1], 'tenant')
if tenant then
  redis.call('ZREM', 'rf:tenant:' .. tenant .. ':status:' .. current, ARGV[1])
  redis.call('ZADD', 'rf:tenant:' .. tenant .. ':status:' .. ARGV[2], score, ARGV[1])
end
local queue = redis.call('HGET', KEYS[1], 'queue')
if ARGV[2] ~= 'running' and queue then redis.call('HDEL', 'rf:inflight:' .. queue, ARGV[1]) end
if tonumber(ARGV[4]) > 0 then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  local hook = redis.call('HGET', KEYS[1], 'webhook_url')
  if hook and hook ~= '' then
    local now = redis.call('TIME')
    redis.call('ZADD', 'rf:webhooks', now[1], ARGV[1])
    redis.call('HSET', KEYS[1], 'webhook_attempts', '0')
  end
else
  redis.call('PERSIST', KEYS[1])
end
if ARGV[5] == '1' then redis.call('LPUSH', 'rf:deadletter', ARGV[1]) end
if ARGV[2] == 'queued' then redis.call('LREM', 'rf:deadletter', 0, ARGV[1]) end
if ARGV[2] == 'cancelled' and current == 'queued' and queue then
  local waiting = redis.call('HGET', KEYS[1], 'queue_message')
  if waiting then redis.call('LREM', queue, 1, waiting) end
end
if ARGV[2] == 'cancelled' then redis.call('ZREM', 'rf:delayed', ARGV[1]) end
if ARGV[6] ~= '' then
  redis.call('LPUSH', ARGV[7], ARGV[6])
  redis.call('HSET', KEYS[1], 'queue_message', ARGV[6])
end
return {'ok', current}
"""

# A worker takes a delivered job. Returns {'run', attempts} or {'skip', status}.
# A job already "running" is taken over only when its recorded worker is gone
# (no heartbeat) or is this very pod: a redelivered message never runs a job twice.
# KEYS: job  ARGV: id, pod, now
_CLAIM = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'skip', 'missing'} end
if status == 'running' then
  local owner = redis.call('HGET', KEYS[1], 'worker')
  if owner and owner ~= '' and owner ~= ARGV[2] and redis.call('EXISTS', 'rf:worker:' .. owner) == 1 then
    return {'skip', 'running-elsewhere'}
  end
elseif status ~= 'queued' and status ~= 'retrying' then
  return {'skip', status}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[2], 'started_at', ARGV[3], 'stage', 'starting')
redis.call('HDEL', KEYS[1], 'queue_message')
local score = redis.call('ZSCORE', 'rf:jobs:all', ARGV[1]) or 0
redis.call('ZREM', 'rf:jobs:status:' .. status, ARGV[1])
redis.call('ZADD', 'rf:jobs:status:running', score, ARGV[1])
local tenant = redis.call('HGET', KEYS[1], 'tenant')
if tenant then
  redis.call('ZREM', 'rf:tenant:' .. tenant .. ':status:' .. status, ARGV[1])
  redis.call('ZADD', 'rf:tenant:' .. tenant .. ':status:running', score, ARGV[1])
end
local queue = redis.call('HGET', KEYS[1], 'queue')
redis.call('HSET', 'rf:inflight:' .. queue, ARGV[1], ARGV[2])
return {'run', tostring(attempts)}
"""


# Move due retries (zset rf:delayed, score = due time) onto their queues. Atomic, so
# every worker and beat may run it without pushing a job twice.
# ARGV: now, max count
_PROMOTE_DUE = """
local due = redis.call('ZRANGEBYSCORE', 'rf:delayed', '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local moved = 0
for _, id in ipairs(due) do
  redis.call('ZREM', 'rf:delayed', id)
  local key = 'rf:job:' .. id
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
# oldest (compare-and-move), keeping their order: the oldest ends up where the
# consumer pops next. Records each job's new queue.
# KEYS: source, destination  ARGV: n, n messages oldest first, n job ids in the same order
_MOVE_TAIL = """
local n = tonumber(ARGV[1])
local tail = redis.call('LRANGE', KEYS[1], -n, -1)
if #tail ~= n then return 0 end
for i = 1, n do
  if tail[n - i + 1] ~= ARGV[1 + i] then return 0 end
end
for i = n, 1, -1 do redis.call('RPUSH', KEYS[2], ARGV[1 + i]) end
redis.call('LTRIM', KEYS[1], 0, -n - 1)
for i = 1, n do
  local key = 'rf:job:' .. ARGV[1 + n + i]
  if redis.call('EXISTS', key) == 1 then redis.call('HSET', key, 'queue', KEYS[2]) end
end
return n
"""


class JobNotFound(KeyError):
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


class JobStore:
    def __init__(self, client: redis.Redis, *, retention_seconds: int = 7 * 24 * 3600):
        self.redis = client
        self.retention_seconds = retention_seconds
        self._submit = client.register_script(_SUBMIT)
        self._transition = client.register_script(_TRANSITION)
        self._claim = client.register_script(_CLAIM)
        self._promote_due = client.register_script(_PROMOTE_DUE)
        self._move_tail = client.register_script(_MOVE_TAIL)

    # -- writes -------------------------------------------------------------

    def submit(self, job: Job, message: str, *, body_hash: str = "") -> tuple[Job, bool]:
        """Store a new job and push its message atomically. Returns (job, created).

        With an idempotency key, a replay of the same body returns the first job;
        a different body raises IdempotencyConflict.
        """
        idem = idempotency_key(job.tenant, job.idempotency_key) if job.idempotency_key else ""
        fields = encode_fields(job.model_dump(exclude_none=False) | {"result": job.result, "error": job.error})
        fields["body_hash"] = body_hash
        fields["queue_message"] = message
        flat = [item for pair in fields.items() for item in pair]
        outcome, existing = self._submit(
            keys=[job_key(job.id), job.queue, idem],
            args=[job.id, f"{job.id} {body_hash}", self.retention_seconds, message,
                  _score(job.created_at.timestamp()), job.kind, *flat],
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
    ) -> JobStatus:
        """Move a job to ``target`` if the state machine allows it; returns the previous status."""
        target = JobStatus(target)
        sources = ",".join(s.value for s in allowed_sources(target))
        ttl = self.retention_seconds if target in TERMINAL_STATUSES else 0
        encoded = encode_fields(fields or {})
        flat = [item for pair in encoded.items() for item in pair]
        outcome, current = self._transition(
            keys=[job_key(job_id)],
            args=[job_id, target.value, f",{sources},", ttl, "1" if dead_letter else "0",
                  requeue_message or "", requeue_queue or "", *flat],
        )
        if outcome == "missing":
            raise JobNotFound(job_id)
        if outcome == "conflict":
            raise TransitionConflict(job_id, current, target.value)
        return JobStatus(current)

    def schedule_retry(self, job_id: str, message: str, delay_s: float, fields: dict[str, Any]) -> None:
        """running -> retrying; the message waits in rf:delayed until due."""
        self.transition(job_id, JobStatus.retrying, fields=fields | {"queue_message": message})
        self.redis.zadd(DELAYED, {job_id: _now() + delay_s})

    def promote_due_retries(self, limit: int = 100) -> int:
        return int(self._promote_due(args=[repr(_now()), limit]))

    def claim(self, job_id: str, pod: str) -> tuple[bool, str]:
        """A worker takes a delivered job: (True, attempts) to run it, (False, why) to skip."""
        outcome, detail = self._claim(keys=[job_key(job_id)], args=[job_id, pod, repr(_now())])
        return outcome == "run", detail

    def record_progress(self, job_id: str, status: JobStatus, progress: float, stage: str = "", message: str = "") -> None:
        event = ProgressEvent(job_id=job_id, status=status, progress=round(progress, 2), stage=stage,
                              message=message, at=datetime.now(timezone.utc))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(job_key(job_id), mapping={"progress": str(event.progress), "stage": stage, "message": message})
        pipe.publish(events_channel(job_id), event.model_dump_json())
        pipe.execute()

    def publish_status(self, job: Job) -> None:
        """Tell SSE listeners about a status change (the job record is already written)."""
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
        max_score: int | str = "+inf"
        after_id: str | None = None
        if cursor:
            max_score, after_id = decode_cursor(cursor)
        found: list[tuple[int, str, Job]] = []
        stale: list[str] = []
        batch = max(limit + 1, 20)
        offset = 0
        while len(found) <= limit:
            rows = self.redis.zrevrangebyscore(index, max_score, "-inf", start=offset, num=batch, withscores=True)
            if not rows:
                break
            offset += len(rows)
            pipe = self.redis.pipeline(transaction=False)
            for job_id, _ in rows:
                pipe.hgetall(job_key(job_id))
            for (job_id, score), raw in zip(rows, pipe.execute()):
                score = int(score)
                # Equal scores come in descending member order; resume after the cursor.
                if after_id is not None and score == max_score and job_id >= after_id:
                    continue
                if not raw:
                    stale.append(job_id)
                    continue
                job = decode_job(raw)
                if (status and job.status != status) or (kind and job.kind != kind) or \
                        (tenant is not None and job.tenant != tenant):
                    continue
                found.append((score, job_id, job))
            if len(rows) < batch:
                break
        if stale:
            self.redis.zrem(index, *stale)
        page = found[:limit]
        next_cursor = encode_cursor(page[-1][0], page[-1][1]) if len(found) > limit else None
        return Page(jobs=[job for _, _, job in page], next_cursor=next_cursor)

    def dead_letter(self, limit: int = 100) -> list[str]:
        return self.redis.lrange(DEADLETTER, 0, limit - 1)

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

    def move_oldest(self, source: str, destination: str, messages: list[str], job_ids: list[str]) -> int:
        """Move ``messages`` (the queue's oldest, oldest first) if unchanged; returns how many moved."""
        return int(self._move_tail(keys=[source, destination], args=[len(messages), *messages, *job_ids]))

    def live_workers(self) -> set[str]:
        return {info["name"] for info in self.workers()}

    def purge_expired_index_entries(self, batch: int = 500) -> int:
        """Drop index entries whose job record has expired (retention). Returns how many."""
        removed = 0
        indexes = [INDEX_ALL] + [status_index(s) for s in JobStatus] + list(self.redis.scan_iter(f"{_INDEX_PREFIX}kind:*"))
        indexes += list(self.redis.scan_iter(f"{_TENANT_PREFIX}*"))
        for index in indexes:
            start = 0
            while True:
                ids = self.redis.zrange(index, start, start + batch - 1)
                if not ids:
                    break
                pipe = self.redis.pipeline(transaction=False)
                for job_id in ids:
                    pipe.exists(job_key(job_id))
                missing = [job_id for job_id, exists in zip(ids, pipe.execute()) if not exists]
                if missing:
                    self.redis.zrem(index, *missing)
                    removed += len(missing)
                start += batch - len(missing)
        # Dead-letter entries whose job expired are noise too.
        for job_id in self.redis.lrange(DEADLETTER, 0, -1):
            if not self.redis.exists(job_key(job_id)):
                self.redis.lrem(DEADLETTER, 0, job_id)
                removed += 1
        return removed


def _message_age_s(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        headers = json.loads(raw)["headers"]
        enqueued = headers.get("rf_enqueued_at")
        return max(0.0, _now() - float(enqueued)) if enqueued else None
    except (ValueError, KeyError, TypeError):
        return None


__all__ = [
    "ACTIVE_STATUSES",
    "JobStore",
    "JobNotFound",
    "TransitionConflict",
    "IdempotencyConflict",
    "Page",
    "QueueStats",
    "JobError",
    "JobResult",
]
