"""The WorkerPool resource as the API reads and writes it: names and pure views.

The operator owns the full typed model (renderfarm.operator.models); the API
only needs the resource's coordinates, a summary of each pool and the merge
patch for an SRE's change, so these live here, with no Kubernetes client.
"""

from __future__ import annotations

from typing import Any

GROUP = "renderfarm.io"
VERSION = "v1alpha1"
PLURAL = "workerpools"
KIND = "WorkerPool"
API_VERSION = f"{GROUP}/{VERSION}"
# Pauses a pool like spec.paused does (kubectl annotate wp/cpu renderfarm.io/paused=true).
PAUSED_ANNOTATION = "renderfarm.io/paused"


def annotation_paused(annotations: dict[str, str] | None) -> bool:
    return (annotations or {}).get(PAUSED_ANNOTATION, "").strip().lower() == "true"


def pool_summary(body: dict[str, Any]) -> dict[str, Any]:
    """What an SRE wants to see of one WorkerPool object (plain dict in, plain dict out)."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    return {
        "name": meta.get("name", ""),
        "deployment": spec.get("deployment", ""),
        "queues": [queue.get("name", "") for queue in spec.get("queues") or []],
        "min_replicas": spec.get("minReplicas", 0),
        "max_replicas": spec.get("maxReplicas", 10),
        "pinned_replicas": spec.get("pinnedReplicas"),
        "paused": bool(spec.get("paused")) or annotation_paused(meta.get("annotations")),
        "desired_replicas": status.get("desiredReplicas"),
        "current_replicas": status.get("currentReplicas"),
        "backlog": status.get("backlog"),
        "in_flight": status.get("inFlight"),
        "last_scale_time": status.get("lastScaleTime"),
        "last_scale_reason": status.get("lastScaleReason"),
        "conditions": [
            {"type": condition.get("type"), "status": condition.get("status"), "reason": condition.get("reason"),
             "message": condition.get("message"), "last_transition_time": condition.get("lastTransitionTime")}
            for condition in status.get("conditions") or []
        ],
    }


def spec_patch(changes: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch for an SRE's change to a pool's spec.

    ``changes`` holds only the fields the caller set (snake_case): ``min_replicas``,
    ``max_replicas``, ``pinned_replicas`` (None clears the pin: back to autoscaling)
    and ``paused``.
    """
    wire = {"min_replicas": "minReplicas", "max_replicas": "maxReplicas",
            "pinned_replicas": "pinnedReplicas", "paused": "paused"}
    unknown = set(changes) - set(wire)
    if unknown:
        raise ValueError(f"unknown pool fields: {', '.join(sorted(unknown))}")
    return {"spec": {wire[name]: value for name, value in changes.items()}}


def check_bounds(spec: dict[str, Any], changes: dict[str, Any]) -> str | None:
    """Why the change would leave min above max (the CRD refuses it too), or None."""
    minimum = changes.get("min_replicas", spec.get("minReplicas", 0))
    maximum = changes.get("max_replicas", spec.get("maxReplicas", 10))
    if minimum is None or maximum is None:
        return "min_replicas and max_replicas cannot be cleared"
    if minimum > maximum:
        return f"min_replicas ({minimum}) must not be greater than max_replicas ({maximum})"
    return None
