"""The expiry index (pure): which index entries a bounded expiry pass removes.

A finished job's record expires by its Redis TTL (the retention). Its entries in the
listing indexes do not, and finding them by scanning every index costs time in
proportion to all jobs ever kept. Instead each finished job has one entry in the
expiry index (``rf:jobs:expires`` in the job store), scored by when its record expires,
whose member names what the pass needs once the record is gone. A pass reads at most
``limit`` due entries, so it costs the same with 10^3 or 10^6 jobs kept; a backlog
(after beat was down) drains over the following passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Redis PTTL answers: the key does not exist / exists without a TTL.
PTTL_GONE = -2
PTTL_PERSISTENT = -1


@dataclass(frozen=True)
class ExpiredJob:
    job_id: str
    status: str
    kind: str
    tenant: str


def expiry_member(job_id: str, status: str, kind: str, tenant: str) -> str:
    """A finished job's member in the expiry index. The store's transition script
    builds the same string (id, status, kind, tenant, space-separated); the tenant goes
    last since it is the only part that may hold a space."""
    return f"{job_id} {status} {kind} {tenant}"


def parse_expiry_member(member: str) -> ExpiredJob | None:
    parts = member.split(" ", 3)
    if len(parts) != 4 or not parts[0]:
        return None
    return ExpiredJob(*parts)


@dataclass(frozen=True)
class ExpiryPlan:
    gone: list[ExpiredJob] = field(default_factory=list)  # records expired: drop their index entries
    rescore: dict[str, float] = field(default_factory=dict)  # not expired yet: look again then
    forget: list[str] = field(default_factory=list)  # entries that are done with (or unreadable)


def plan_expiry(due: list[str], pttl_ms: list[int], now: float) -> ExpiryPlan:
    """What to do with due entries given each record's PTTL (same order). A record still
    there (the caller's clock ran ahead of Redis's) is looked at again when it expires;
    one with no TTL was made to live on without a transition and is not ours to clean."""
    plan = ExpiryPlan()
    for member, ttl in zip(due, pttl_ms, strict=True):
        job = parse_expiry_member(member)
        if job is None or ttl == PTTL_PERSISTENT:
            plan.forget.append(member)
        elif ttl == PTTL_GONE:
            plan.gone.append(job)
            plan.forget.append(member)
        else:
            plan.rescore[member] = now + ttl / 1000
    return plan
