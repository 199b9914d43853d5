"""Typed WorkerPool spec and status (the CRD in helm/renderfarm/crds/workerpool.yaml, as pydantic models).

Field names are snake_case in Python and camelCase on the wire (the CRD's names).
The models validate what the CRD validates, so a pool that reaches the operator
without the API server's checks (tests, a stale CRD) is refused the same way.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from renderfarm.core.workerpools import (  # noqa: F401  (the resource's coordinates have one owner)
    API_VERSION,
    GROUP,
    KIND,
    PAUSED_ANNOTATION,
    PLURAL,
    VERSION,
    annotation_paused,
)
QUEUE_PATTERN = r"^(cpu|gpu-transcribe|gpu-vision)\.(critical|high|normal|low)$"

CONDITION_TYPES = ("Ready", "ScalingLimited", "CapacityLimited", "BacklogUnknown", "Paused")


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)

    def wire(self) -> dict[str, Any]:
        """The camelCase dict the API server stores (unset optional fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class QueueRef(_Wire):
    name: str = Field(pattern=QUEUE_PATTERN)
    weight: float = Field(default=1.0, gt=0, le=100)


class Target(_Wire):
    backlog_per_replica: int | None = Field(default=None, ge=1)
    target_wait_seconds: float | None = Field(default=None, gt=0)
    throughput_per_replica: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> "Target":
        if (self.backlog_per_replica is None) == (self.target_wait_seconds is None):
            raise ValueError("set exactly one of backlogPerReplica or targetWaitSeconds")
        return self


class ScalingRules(_Wire):
    stabilization_window_seconds: int = Field(default=0, ge=0, le=3600)
    max_step: int = Field(default=10, ge=1)


def _default_scale_down() -> ScalingRules:
    return ScalingRules(stabilization_window_seconds=60, max_step=1)


class WorkerPoolSpec(_Wire):
    deployment: str = Field(min_length=1, max_length=253)
    queues: list[QueueRef] = Field(min_length=1, max_length=12)
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=10, ge=1)
    target: Target = Field(default_factory=lambda: Target(backlog_per_replica=1))
    scale_up: ScalingRules = Field(default_factory=ScalingRules)
    scale_down: ScalingRules = Field(default_factory=_default_scale_down)
    idle_delay_seconds: int = Field(default=120, ge=0, le=86400)
    paused: bool = False
    pinned_replicas: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> "WorkerPoolSpec":
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must not be greater than maxReplicas")
        names = [queue.name for queue in self.queues]
        if len(set(names)) != len(names):
            raise ValueError("queue names must be unique")
        return self

    @property
    def queue_names(self) -> list[str]:
        return [queue.name for queue in self.queues]

    @property
    def weights(self) -> dict[str, float]:
        return {queue.name: queue.weight for queue in self.queues}


# --- status ---------------------------------------------------------------------


class QueueStatus(_Wire):
    name: str
    backlog: int = 0
    in_flight: int = 0
    paused: bool = False


class Condition(_Wire):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None


class Recommendation(_Wire):
    time: str
    replicas: int


class WorkerPoolStatus(_Wire):
    observed_generation: int | None = None
    selector: str | None = None
    queues: list[QueueStatus] = Field(default_factory=list)
    backlog: int | None = None
    weighted_backlog: float | None = None
    in_flight: int | None = None
    busy_replicas: int | None = None
    arrival_rate: float | None = None
    completion_rate: float | None = None
    throughput_per_replica: float | None = None
    desired_replicas: int | None = None
    current_replicas: int | None = None
    unschedulable_replicas: int | None = None
    last_scale_time: str | None = None
    last_scale_reason: str | None = None
    last_scale_up_time: str | None = None
    last_scale_down_time: str | None = None
    last_observed_time: str | None = None
    observing_since: str | None = None
    recommendations: list[Recommendation] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class WorkerPool(_Wire):
    """A WorkerPool object as the operator sees it."""

    name: str
    namespace: str
    uid: str = ""
    generation: int | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    spec: WorkerPoolSpec
    status: WorkerPoolStatus = Field(default_factory=WorkerPoolStatus)

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> "WorkerPool":
        meta = body.get("metadata") or {}
        return cls(
            name=meta.get("name", ""),
            namespace=meta.get("namespace", ""),
            uid=meta.get("uid", ""),
            generation=meta.get("generation"),
            annotations=dict(meta.get("annotations") or {}),
            spec=WorkerPoolSpec.model_validate(body.get("spec") or {}),
            status=WorkerPoolStatus.model_validate(body.get("status") or {}),
        )

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def paused(self) -> bool:
        """Paused by the spec field or by the annotation renderfarm.io/paused="true"."""
        return self.spec.paused or annotation_paused(self.annotations)


# --- time on the wire ---------------------------------------------------------------


def to_rfc3339(epoch_s: float | None) -> str | None:
    if epoch_s is None or not math.isfinite(epoch_s):
        return None
    moment = datetime.fromtimestamp(epoch_s, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def from_rfc3339(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
