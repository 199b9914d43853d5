"""What the operator needs to know about a pool's pods, and the scale-in choice (pure).

The ReplicaSet controller removes pods with the lowest
``controller.kubernetes.io/pod-deletion-cost`` first (after unscheduled and
not-ready ones). Before a scale-down the operator marks idle pods cheap and pods
running a job (per the in-flight hashes) dear, so only idle pods go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
IDLE_COST = -100
BUSY_COST = 1000  # plus one per job running, so the busiest pod is kept longest


@dataclass(frozen=True)
class PodInfo:
    name: str
    phase: str
    unschedulable: bool
    deleting: bool
    deletion_cost: str | None
    labels: Mapping[str, str] = field(default_factory=dict)


def pod_info(pod: Any) -> PodInfo:
    """From a kubernetes-client V1Pod or a plain dict."""
    if isinstance(pod, dict):
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        name, phase = meta.get("name", ""), status.get("phase") or ""
        annotations, labels = meta.get("annotations") or {}, meta.get("labels") or {}
        deleting = bool(meta.get("deletionTimestamp"))
        conditions = [(c.get("type"), c.get("status"), c.get("reason")) for c in status.get("conditions") or []]
    else:
        name, phase = pod.metadata.name, (pod.status.phase if pod.status else "") or ""
        annotations, labels = pod.metadata.annotations or {}, pod.metadata.labels or {}
        deleting = pod.metadata.deletion_timestamp is not None
        conditions = [(c.type, c.status, c.reason) for c in (pod.status.conditions if pod.status else None) or []]
    unschedulable = phase == "Pending" and any(
        type_ == "PodScheduled" and status == "False" and reason == "Unschedulable" for type_, status, reason in conditions)
    return PodInfo(name=name, phase=phase, unschedulable=unschedulable, deleting=deleting,
                   deletion_cost=annotations.get(DELETION_COST), labels=dict(labels))


def count_unschedulable(pods: Iterable[PodInfo]) -> int:
    return sum(1 for pod in pods if pod.unschedulable and not pod.deleting)


def deletion_costs(pods: Iterable[PodInfo], busy: Mapping[str, int]) -> dict[str, str]:
    """Pod -> the deletion cost it should carry, for the pods whose annotation must change."""
    out: dict[str, str] = {}
    for pod in pods:
        if pod.deleting:
            continue
        jobs = busy.get(pod.name, 0)
        cost = str(BUSY_COST + jobs if jobs > 0 else IDLE_COST)
        if pod.deletion_cost != cost:
            out[pod.name] = cost
    return out


# A Deployment's scale subresource gives its selector as text (metav1.FormatLabelSelector):
# "app=w,tier!=x,env in (a,b),env notin (c),gpu,!legacy". Matching it here lets one
# pod LIST per namespace and tick serve every pool in that namespace.
_REQUIREMENT = re.compile(r"\s*(?:(!)?([\w./-]+)\s*(?:(==|=|!=)\s*([\w./-]*)|\s+(in|notin)\s*\(([^)]*)\))?)\s*(?:,|$)")


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    selector = selector.strip()
    position = 0
    while position < len(selector):
        found = _REQUIREMENT.match(selector, position)
        if found is None or found.end() == position:
            raise ValueError(f"cannot parse label selector {selector!r}")
        position = found.end()
        negated, key, op, value, set_op, values = found.groups()
        if op in ("=", "=="):
            ok = labels.get(key) == value
        elif op == "!=":
            ok = labels.get(key) != value
        elif set_op:
            choices = {v.strip() for v in values.split(",") if v.strip()}
            ok = (labels.get(key) in choices) if set_op == "in" else (labels.get(key) not in choices)
        else:
            ok = (key not in labels) if negated else (key in labels)
        if not ok:
            return False
    return True
