"""Requests one client made to the local Kubernetes API server, from its audit log.

k8s/dev/localkube.py logs every request of a ServiceAccount outside kube-system at
Metadata level (AUDIT_POLICY). A request appears once per stage (ResponseStarted for a
watch, ResponseComplete for every request): counting distinct audit IDs counts requests.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})


@dataclass(frozen=True)
class Request:
    verb: str
    resource: str  # "deployments/scale", "leases", ...
    name: str
    code: int | None
    received: float  # epoch seconds

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def requests_of(audit_log: Path, username: str, since: float, until: float) -> list[Request]:
    """Requests by ``username`` received in [since, until) (epoch seconds), one per audit ID."""
    seen: dict[str, Request] = {}
    paths = sorted(audit_log.parent.glob(audit_log.stem + "*" + audit_log.suffix))  # rotated files too
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if username not in line:
                    continue
                event = json.loads(line)
                if (event.get("user") or {}).get("username") != username or event["auditID"] in seen:
                    continue
                received = _epoch(event["requestReceivedTimestamp"])
                if not since <= received < until:
                    continue
                ref = event.get("objectRef") or {}
                resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
                seen[event["auditID"]] = Request(verb=event.get("verb", ""), resource=resource, name=ref.get("name", ""),
                                                 code=(event.get("responseStatus") or {}).get("code"), received=received)
    return sorted(seen.values(), key=lambda r: r.received)


def by_verb_and_resource(requests: list[Request]) -> dict[str, int]:
    return dict(Counter(f"{r.verb} {r.resource}" for r in requests))
