"""One Redis round trip per tick for every pool: queue depths, in-flight jobs, outcomes.

For each queue of every pool, one pipeline (no MULTI) carries:

- LLEN of the base list and of kombu's priority sub-lists (``redis_list_keys``): a
  message is waiting in any of them; reading only the base list (what a plain
  "list length" scaler does) misses the others;
- HGETALL of ``rf:inflight:<queue>``: the jobs taken by a worker and not finished
  (job id -> worker name ``<pool>@<pod>``), which gives both the in-flight count and
  the pods that are busy (the scale-in choice);

plus SMEMBERS of the paused queues and HGETALL of the outcome counters
(``rf:metrics:outcomes``, whose format renderfarm.core.metrics_store owns) for
completion rates.

A failed read is "unknown", never 0: the snapshot says ``ok=False`` (or a queue is
missing from ``queues``) and the policy keeps the pool's size.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import redis

from renderfarm.core.metrics_store import OUTCOMES, finished_by_queue
from renderfarm.core.queues import redis_list_keys
from renderfarm.core.store import PAUSED, inflight_key
from renderfarm.core.workers import pod_of


@dataclass(frozen=True)
class QueueReading:
    backlog: int  # waiting in the base list and every priority sub-list
    in_flight: Mapping[str, str]  # job id -> worker name


@dataclass(frozen=True)
class Snapshot:
    taken_at: float  # wall clock, seconds
    ok: bool
    error: str = ""
    queues: Mapping[str, QueueReading] = field(default_factory=dict)  # a queue that failed is absent
    paused: frozenset[str] = frozenset()
    outcomes: Mapping[str, object] = field(default_factory=dict)  # the raw outcome hash (field -> count)
    duration_s: float = 0.0
    round_trips: int = 0

    def knows(self, queues: Iterable[str]) -> bool:
        return self.ok and all(q in self.queues for q in queues)

    def completed(self) -> dict[str, int]:
        """Finished jobs per queue (cumulative counters)."""
        return finished_by_queue(self.outcomes)


class QueueReader:
    """Reads every queue of every pool in one pipelined round trip."""

    def __init__(self, client: redis.Redis):
        self.client = client

    def read(self, queues: Iterable[str]) -> Snapshot:
        names = sorted(set(queues))
        started = time.perf_counter()
        taken_at = time.time()
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            for key in redis_list_keys(name):
                pipe.llen(key)
            pipe.hgetall(inflight_key(name))
        pipe.smembers(PAUSED)
        pipe.hgetall(OUTCOMES)
        try:
            results = pipe.execute(raise_on_error=False)
        except (redis.RedisError, OSError) as exc:
            return Snapshot(taken_at=taken_at, ok=False, error=f"{type(exc).__name__}: {exc}",
                            duration_s=time.perf_counter() - started, round_trips=1)
        outcomes_raw, paused_raw = results.pop(), results.pop()
        per_queue = len(redis_list_keys("x")) + 1
        readings: dict[str, QueueReading] = {}
        errors: list[str] = []
        for index, name in enumerate(names):
            chunk = results[index * per_queue:(index + 1) * per_queue]
            failed = next((r for r in chunk if isinstance(r, Exception)), None)
            if failed is not None:
                errors.append(f"{name}: {failed}")  # e.g. WRONGTYPE: this queue stays unknown
                continue
            readings[name] = QueueReading(backlog=sum(int(n) for n in chunk[:-1]), in_flight=dict(chunk[-1]))
        paused = frozenset() if isinstance(paused_raw, Exception) else frozenset(paused_raw)
        outcomes = {} if isinstance(outcomes_raw, Exception) else dict(outcomes_raw)
        return Snapshot(taken_at=taken_at, ok=True, error="; ".join(errors), queues=readings, paused=paused,
                        outcomes=outcomes, duration_s=time.perf_counter() - started, round_trips=1)


# --- derived numbers (pure) ----------------------------------------------------------


def busy_pods(snapshot: Snapshot, queues: Iterable[str]) -> dict[str, int]:
    """Pod name -> jobs it runs, from the in-flight hashes of these queues."""
    out: dict[str, int] = {}
    for queue in queues:
        reading = snapshot.queues.get(queue)
        if reading is None:
            continue
        for worker in reading.in_flight.values():
            pod = pod_of(worker)
            out[pod] = out.get(pod, 0) + 1
    return out


@dataclass
class QueueRates:
    arrival: float = 0.0
    completion: float = 0.0


class RateTracker:
    """Arrival and completion rates per queue, smoothed over ``time_constant_s``.

    completions = growth of the terminal outcome counters; arrivals = what the queue and
    its in-flight set gained plus what completed (work is conserved). A failed read
    breaks the series: the next good one starts a new baseline instead of reading the
    gap as a burst.
    """

    def __init__(self, time_constant_s: float = 20.0):
        self.time_constant_s = time_constant_s
        self._last: Snapshot | None = None
        self.rates: dict[str, QueueRates] = {}

    def update(self, snapshot: Snapshot) -> None:
        if not snapshot.ok:
            self._last = None
            return
        last, self._last = self._last, snapshot
        if last is None:
            return
        elapsed = snapshot.taken_at - last.taken_at
        if elapsed <= 0:
            return
        alpha = 1.0 - math.exp(-elapsed / self.time_constant_s)
        done_now, done_before = snapshot.completed(), last.completed()
        for queue, reading in snapshot.queues.items():
            before = last.queues.get(queue)
            if before is None:
                continue
            completed = max(0, done_now.get(queue, 0) - done_before.get(queue, 0))
            gained = (reading.backlog - before.backlog) + (len(reading.in_flight) - len(before.in_flight))
            arrived = max(0, gained + completed)
            rates = self.rates.setdefault(queue, QueueRates())
            rates.arrival += alpha * (arrived / elapsed - rates.arrival)
            rates.completion += alpha * (completed / elapsed - rates.completion)

    def pool_rates(self, queues: Iterable[str]) -> tuple[float | None, float | None]:
        known = [self.rates[q] for q in queues if q in self.rates]
        if not known:
            return None, None
        return sum(r.arrival for r in known), sum(r.completion for r in known)
