"""Duration estimates in Redis: what the farm learned from finished jobs, and the
estimates it gives on reads. The maths is in renderfarm.core.estimate_model.

Key layout (owned here, all under ``rf:estimates:``):

- ``rf:estimates:model``          hash: ``<kind>|<shape>`` and ``<kind>|*`` -> a decayed
  least-squares fit (JSON, ``estimate_model.Fit``) of run seconds on media seconds;
  ``pool|<pool>`` -> the same over every job of a pool with no media length (its mean
  job, for the time the work ahead of a waiting job takes). Bounded: kinds × shapes.
- ``rf:estimates:media:<digest>`` string: the media seconds of an input (digest of its
  URI), learned from any finished job on it; expires with the job retention.

Nothing is stored on a job: estimates are computed when a job is read, from the job's
own fields, these records, its pool's queue lengths and its live workers. Reads cost a
fixed number of round trips whatever the queue length (see ``for_jobs``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import redis

from renderfarm.core import estimate_model as model
from renderfarm.core.jobs import Job, JobStatus
from renderfarm.core.queues import PRIORITY_ORDER, parse_queue_name, pool_queues, queue_name
# The queued index's score (creation time in µs) is the store's format: read through its function.
from renderfarm.core.store import JobStore, _score, status_index

log = logging.getLogger("renderfarm.estimates")

PREFIX = "rf:estimates:"
MODEL = f"{PREFIX}model"
_MEDIA_PREFIX = f"{PREFIX}media:"
_UPDATE_TRIES = 5
MIN_SHAPE_SAMPLES = 3  # below this a shape's own fit is noise: the kind's fit answers


def media_key(input_uri: str) -> str:
    return _MEDIA_PREFIX + hashlib.sha256(input_uri.encode()).hexdigest()[:32]


def kind_field(kind: str, shape: str) -> str:
    return f"{kind}|{shape}"


def pool_field(pool: str) -> str:
    return f"pool|{pool}"


def _fields_for(kind: str, params: Mapping[str, Any]) -> list[str]:
    shape = model.shape_of(kind, params)
    return list(dict.fromkeys([kind_field(kind, shape), kind_field(kind, "*")]))


# --- learning (the worker, when a job succeeds) ----------------------------------------


def learn(client: redis.Redis, job: Job, pool: str, seconds: float, media_ttl_s: int) -> None:
    """Teach the model one succeeded job: its run ``seconds`` against the media length
    its result states. Optimistic (WATCH) so concurrent workers never lose an update."""
    metadata = job.result.metadata if job.result else None
    media_s = model.media_seconds(metadata)
    kind_fields = _fields_for(job.kind, job.params)
    fields = kind_fields + [pool_field(pool)]
    for _ in range(_UPDATE_TRIES):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(MODEL)
                current = pipe.hmget(MODEL, fields)
                new = {field: model.update(model.Fit.from_json(raw), media_s if field in kind_fields else None,
                                           seconds).to_json()
                       for field, raw in zip(fields, current)}
                pipe.multi()
                pipe.hset(MODEL, mapping=new)
                if media_s is not None:
                    pipe.set(media_key(job.input), repr(media_s), ex=max(1, media_ttl_s))
                pipe.execute()
                return
            except redis.WatchError:
                continue
    log.info("estimate model not updated for job %s: contended", job.id)


def learned(client: redis.Redis) -> dict[str, model.Fit]:
    """Every fit, by field (for the bench and for inspection)."""
    out = {}
    for field, raw in client.hgetall(MODEL).items():
        fit = model.Fit.from_json(raw)
        if fit is not None:
            out[field.decode() if isinstance(field, bytes) else field] = fit
    return out


# --- estimates on reads ------------------------------------------------------------------


@dataclass(frozen=True)
class JobEstimate:
    estimated_duration_s: float | None = None
    estimated_start_s: float | None = None
    duration_s: float | None = None


def actual_duration(job: Job) -> float | None:
    if job.started_at is None or job.finished_at is None:
        return None
    return max(0.0, (job.finished_at - job.started_at).total_seconds())


def _waiting(job: Job) -> bool:
    return job.status in (JobStatus.queued, JobStatus.retrying)


@dataclass(frozen=True)
class _PoolView:
    depths: dict[str, int]  # queue -> waiting messages
    running: int
    slots: int


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class PoolSnapshots:
    """A process's last reading of its pools' queue lengths and live job slots, reused for
    ``max_age_s``: a waiting job's start is an estimate in seconds, so a reading a second
    old changes nothing a client can see, and a busy API reads each pool once a second
    instead of on every request."""

    def __init__(self, max_age_s: float = 1.0):
        self.max_age_s = max_age_s
        self._taken: dict[str, tuple[float, _PoolView]] = {}

    def stale(self, pools: set[str]) -> set[str]:
        now = time.monotonic()
        return {pool for pool in pools if pool not in self._taken or now - self._taken[pool][0] > self.max_age_s}

    def refresh(self, store: JobStore, pools: set[str]) -> None:
        now = time.monotonic()
        for pool, view in _pool_views(store, pools).items():
            self._taken[pool] = (now, view)

    def get(self, store: JobStore, pools: set[str]) -> dict[str, _PoolView]:
        if stale := self.stale(pools):
            self.refresh(store, stale)
        return {pool: self._taken[pool][1] for pool in pools}


def _pool_views(store: JobStore, pools: set[str]) -> dict[str, _PoolView]:
    """Queue lengths, running jobs and live job slots of each pool (the mean job is
    added from the fits read with the jobs)."""
    if not pools:
        return {}
    names = [name for pool in sorted(pools) for name in pool_queues(pool)]
    stats = {stat.name: stat for stat in store.queue_stats(names)}
    slots: dict[str, int] = {}
    for worker in store.workers():
        pool = worker.get("pool", "")
        try:
            slots[pool] = slots.get(pool, 0) + max(1, int(worker.get("concurrency") or 1))
        except ValueError:
            slots[pool] = slots.get(pool, 0) + 1
    return {pool: _PoolView(depths={q: stats[q].depth for q in pool_queues(pool)},
                            running=sum(stats[q].in_flight for q in pool_queues(pool)), slots=slots.get(pool, 0))
            for pool in pools}


@dataclass(frozen=True)
class _Reads:
    """The per-job reads of ``for_jobs``, queued on a pipeline (sync or asyncio) and decoded."""

    jobs: Sequence[Job]
    fields: list[str]
    waiting: list[Job]

    @classmethod
    def of(cls, jobs: Sequence[Job]) -> "_Reads":
        waiting = [job for job in jobs if _waiting(job)]
        fields = sorted({f for job in jobs for f in _fields_for(job.kind, job.params)}
                        | {pool_field(_pool_of(job)) for job in waiting})
        return cls(jobs=jobs, fields=fields, waiting=waiting)

    @property
    def pools(self) -> set[str]:
        return {_pool_of(job) for job in self.waiting}

    def queue(self, pipe) -> None:
        pipe.hmget(MODEL, self.fields)
        for job in self.jobs:
            pipe.get(media_key(job.input))
        for job in self.waiting:
            pipe.zcount(status_index(JobStatus.queued), "-inf", f"({_score(job.created_at.timestamp())}")

    def estimates(self, replies: list, pools: Mapping[str, _PoolView], now: float) -> list[JobEstimate]:
        fits = {field: model.Fit.from_json(raw) for field, raw in zip(self.fields, replies[0])}
        media = replies[1:1 + len(self.jobs)]
        older = dict(zip((job.id for job in self.waiting), replies[1 + len(self.jobs):]))
        out = []
        for job, raw_media in zip(self.jobs, media):
            media_s = model.media_seconds(job.result.metadata if job.result else None)
            if media_s is None and raw_media:
                media_s = float(raw_media)
            duration = model.predict(_fit_for(fits, job.kind, job.params), media_s)
            if job.status == JobStatus.running and job.started_at is not None:
                duration = model.running_duration(duration, now - job.started_at.timestamp(), job.progress)
            start = None
            if _waiting(job):
                pool = _pool_of(job)
                mean_job_s = model.predict(fits.get(pool_field(pool)), None)
                start = _start_of(job, pools[pool], older[job.id], mean_job_s)
            out.append(JobEstimate(estimated_duration_s=_round(duration), estimated_start_s=_round(start),
                                   duration_s=_round(actual_duration(job))))
        return out


def _pool_of(job: Job) -> str:
    return parse_queue_name(job.queue)[0].value


def for_jobs(store: JobStore, jobs: Sequence[Job], now: float | None = None,
             snapshots: PoolSnapshots | None = None) -> list[JobEstimate]:
    """Estimates for each job, in at most four round trips for any number of jobs:
    the fits, media lengths and older queued counts (one pipeline), and for waiting
    jobs their pools' queue lengths and live workers (``snapshots``: a process-wide
    reading of the pools, at most its ``max_age_s`` old, usually no round trip).

    Approximation: a waiting job's place is every message in its pool's higher-priority
    queues, plus the jobs of its own queue created before it (the queued index counts
    older queued jobs of every queue; capped at its own queue's length). Each of those
    is taken to last the pool's mean job, each running one half of it."""
    if not jobs:
        return []
    reads = _Reads.of(jobs)
    pipe = store.redis.pipeline(transaction=False)
    reads.queue(pipe)
    replies = pipe.execute()
    pools = snapshots.get(store, reads.pools) if snapshots else _pool_views(store, reads.pools)
    return reads.estimates(replies, pools, time.time() if now is None else now)


async def for_jobs_async(async_client, store: JobStore, jobs: Sequence[Job],
                         snapshots: PoolSnapshots) -> list[JobEstimate]:
    """``for_jobs`` on an asyncio client (the API's hottest read): one pipelined round
    trip; the pools are re-read (in a thread) only when the snapshot is stale."""
    if not jobs:
        return []
    reads = _Reads.of(jobs)
    pipe = async_client.pipeline(transaction=False)
    reads.queue(pipe)
    replies = await pipe.execute()
    if stale := snapshots.stale(reads.pools):
        await asyncio.to_thread(snapshots.refresh, store, stale)
    return reads.estimates(replies, snapshots.get(store, reads.pools), time.time())


def _fit_for(fits: Mapping[str, model.Fit | None], kind: str, params: Mapping[str, Any]) -> model.Fit | None:
    """The job's own shape once it has a few samples, else its kind's over every shape."""
    shaped = fits.get(_fields_for(kind, params)[0])
    if shaped is not None and shaped.n >= MIN_SHAPE_SAMPLES:
        return shaped
    return fits.get(kind_field(kind, "*"))


def _start_of(job: Job, pool: _PoolView, older_queued: int, mean_job_s: float | None) -> float | None:
    workload, priority = parse_queue_name(job.queue)
    higher = PRIORITY_ORDER[:PRIORITY_ORDER.index(priority)]
    ahead = sum(pool.depths.get(queue_name(workload, p), 0) for p in higher)
    own_depth = pool.depths.get(job.queue, 0)
    # A queued job's own message is in its queue; a retrying one's is not back yet (it goes last).
    ahead += own_depth if job.status == JobStatus.retrying else min(max(0, own_depth - 1), older_queued)
    return model.start_in(ahead, pool.running, pool.slots, mean_job_s)


def for_specs(client: redis.Redis, specs: Iterable[tuple[str, Mapping[str, Any], str | None]]) -> list[float | None]:
    """Expected run seconds of jobs not submitted yet: (kind, params, input URI) each;
    one round trip."""
    specs = list(specs)
    if not specs:
        return []
    fields = sorted({f for kind, params, _ in specs for f in _fields_for(kind, params)})
    pipe = client.pipeline(transaction=False)
    pipe.hmget(MODEL, fields)
    for _, _, uri in specs:
        pipe.get(media_key(uri or ""))
    replies = pipe.execute()
    fits = {field: model.Fit.from_json(raw) for field, raw in zip(fields, replies[0])}
    out = []
    for (kind, params, _), raw_media in zip(specs, replies[1:]):
        out.append(model.predict(_fit_for(fits, kind, params), float(raw_media) if raw_media else None))
    return out
