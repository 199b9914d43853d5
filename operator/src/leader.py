"""Leader election on a coordination.k8s.io Lease, so two operator replicas never both scale.

As client-go does it: a candidate takes the Lease when it is free or when its record
has not changed for a whole lease duration *as measured on the candidate's own
clock* (clocks of different machines are never compared); every write carries the
resourceVersion it read, so two candidates cannot both win the same round. A leader
stops acting once it has failed to renew for ``renew_deadline`` (shorter than the
lease), before anyone else may take over. On a clean shutdown the Lease is released
so the next replica takes over at once.

The leader does not read the Lease on every tick: it renews every third of the
lease duration by writing back the object its own last write returned (its
resourceVersion makes the write fail with 409 if anyone else wrote since; the
next tick then reads). Steady leadership costs one request per renewal.

Even in the worst case (a partitioned leader acting on its last tick) the damage is
bounded: decisions write absolute replica counts computed from the same inputs, so a
second writer repeats a value, it does not add to it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Literal

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("renderfarm.operator.leader")

Action = Literal["create", "renew", "acquire", "wait"]


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    renew_time: str  # as written; only compared for change, never against our clock
    duration_s: int
    transitions: int


def lease_action(record: LeaseRecord | None, me: str, record_seen_since: float, now: float) -> Action:
    """What a candidate does with the Lease it just read (pure).

    ``record_seen_since``: when (our monotonic clock) this exact record was first seen.
    """
    if record is None:
        return "create"
    if record.holder == me:
        return "renew"
    if not record.holder or now - record_seen_since >= record.duration_s:
        return "acquire"
    return "wait"


class LeaderElector:
    def __init__(self, kube, namespace: str, name: str, identity: str, *, duration_s: float = 15.0,
                 renew_every_s: float = 0.0, clock: Callable[[], float] = time.monotonic):
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration_s = int(max(2, round(duration_s)))
        self.renew_deadline_s = self.duration_s * 2 / 3
        # Renew well inside the deadline: a failed renewal leaves time for another try.
        self.renew_every_s = min(renew_every_s or self.duration_s / 3, self.renew_deadline_s / 2)
        self.clock = clock
        self._held = None  # the Lease as our last write returned it, while we lead
        self._renewed_at: float | None = None
        self._seen: tuple[LeaseRecord | None, float] | None = None
        self.transitions = 0  # times this process became leader

    @property
    def is_leader(self) -> bool:
        return self._renewed_at is not None and self.clock() - self._renewed_at < self.renew_deadline_s

    def tick(self) -> bool:
        """Try to take or keep the Lease; True while this process may act."""
        was_leader = self.is_leader
        try:
            self._tick()
        except (ApiException, OSError, ValueError) as exc:
            log.warning("lease %s/%s: %s", self.namespace, self.name, getattr(exc, "reason", exc))
        leader = self.is_leader
        if leader and not was_leader:
            self.transitions += 1
            log.info("%s leads (lease %s/%s)", self.identity, self.namespace, self.name)
        elif was_leader and not leader:
            log.warning("%s lost the lease %s/%s", self.identity, self.namespace, self.name)
        return leader

    def _tick(self) -> None:
        now = self.clock()
        if self._held is not None and self.is_leader:
            if now - self._renewed_at < self.renew_every_s:
                return  # renewed recently: no request
            lease = self._held
            lease.spec.renew_time = datetime.now(timezone.utc)
            try:
                self._held = self.kube.replace_lease(self.namespace, self.name, lease)
            except ApiException:
                self._held = None  # someone else wrote it (or it is gone): read it next tick
                raise
            self._renewed_at = now
            return
        self._held = None
        lease = self.kube.get_lease(self.namespace, self.name)
        record = _record(lease)
        if self._seen is None or self._seen[0] != record:
            self._seen = (record, now)
        action = lease_action(record, self.identity, self._seen[1], now)
        if action == "wait":
            self._renewed_at = None
            return
        stamp = datetime.now(timezone.utc)
        if action == "create":
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=client.V1LeaseSpec(holder_identity=self.identity, lease_duration_seconds=self.duration_s,
                                        acquire_time=stamp, renew_time=stamp, lease_transitions=0))
            self._held = self.kube.create_lease(self.namespace, body)
        else:
            spec = lease.spec or client.V1LeaseSpec()
            spec.renew_time = stamp
            spec.lease_duration_seconds = self.duration_s
            if action == "acquire":
                spec.holder_identity = self.identity
                spec.acquire_time = stamp
                spec.lease_transitions = (spec.lease_transitions or 0) + 1
            lease.spec = spec
            self._held = self.kube.replace_lease(self.namespace, self.name, lease)  # carries the resourceVersion read
        self._renewed_at = now

    def release(self) -> None:
        """Hand the Lease back (clean shutdown) so a standby takes over without waiting."""
        if not self.is_leader:
            return
        try:
            lease = self.kube.get_lease(self.namespace, self.name)
            if lease is not None and lease.spec is not None and lease.spec.holder_identity == self.identity:
                lease.spec.holder_identity = ""
                lease.spec.lease_duration_seconds = 1
                self.kube.replace_lease(self.namespace, self.name, lease)
        except (ApiException, OSError) as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, getattr(exc, "reason", exc))
        self._renewed_at = None
        self._held = None


def _record(lease) -> LeaseRecord | None:
    if lease is None:
        return None
    spec = lease.spec
    if spec is None:
        return LeaseRecord("", "", 0, 0)
    renew = spec.renew_time.isoformat() if spec.renew_time else ""
    return LeaseRecord(spec.holder_identity or "", renew, int(spec.lease_duration_seconds or 0),
                       int(spec.lease_transitions or 0))
