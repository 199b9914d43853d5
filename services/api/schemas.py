"""Request and response models. The submit body is built from the kind registry."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, create_model

from renderfarm.core.jobs import Job
from renderfarm.core.kinds import KINDS
from renderfarm.core.queues import Priority


class _SubmitBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str = Field(min_length=1, max_length=4096, description="file:///path under an allowed root, http(s)://, or s3://bucket/key in an allowed bucket")
    priority: Priority = Priority.normal
    webhook_url: HttpUrl | None = None
    labels: dict[str, Annotated[str, Field(max_length=256)]] = Field(default_factory=dict, max_length=32)


def _submit_model(kind_name: str, params_model: type[BaseModel]) -> type[BaseModel]:
    title = "".join(part.capitalize() for part in kind_name.split("_"))
    return create_model(
        f"Submit{title}Job",
        __base__=_SubmitBase,
        kind=(Literal[kind_name], ...),  # type: ignore[valid-type]
        params=(params_model, Field(default_factory=params_model)),
    )


# One request model per registered kind, discriminated by "kind": an unknown kind
# is a 422 that lists the known ones, and the OpenAPI schema documents every kind.
SubmitJobRequest = Annotated[
    Union[tuple(_submit_model(kind.name, kind.params_model) for kind in KINDS.values())],  # type: ignore[misc]
    Field(discriminator="kind"),
]


# The registered kinds as a query-parameter type: the schema lists them, and an
# unknown one is a 422 naming the known ones.
KindName = StrEnum("KindName", {name: name for name in KINDS})


class JobPage(BaseModel):
    jobs: list["JobOut"]
    next_cursor: str | None = None


class QueueOut(BaseModel):
    name: str
    pool: str
    priority: str
    depth: int
    in_flight: int
    consumers: int
    paused: bool
    oldest_age_s: float | None = None


class PoolCondition(BaseModel):
    type: str
    status: str
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None


class PoolOut(BaseModel):
    """One WorkerPool: its bounds and overrides (spec) and what the operator saw and did (status)."""

    name: str
    deployment: str
    queues: list[str]
    min_replicas: int
    max_replicas: int
    pinned_replicas: int | None = Field(None, description="A manual size that wins over autoscaling until cleared")
    paused: bool = Field(description="Hands off: the operator changes nothing (spec.paused or the annotation)")
    desired_replicas: int | None = None
    current_replicas: int | None = None
    backlog: int | None = Field(None, description="Jobs waiting in the pool's queues")
    in_flight: int | None = Field(None, description="Jobs taken by a worker and not finished")
    last_scale_time: str | None = None
    last_scale_reason: str | None = None
    conditions: list[PoolCondition] = Field(default_factory=list)


class PoolPatch(BaseModel):
    """Fields to change; absent fields stay. ``pinned_replicas: null`` clears the pin (autoscaling resumes)."""

    model_config = ConfigDict(extra="forbid")

    min_replicas: int | None = Field(None, ge=0)
    max_replicas: int | None = Field(None, ge=1)
    pinned_replicas: int | None = Field(None, ge=0)
    paused: bool | None = None

    def changes(self) -> dict[str, Any]:
        changed = {name: getattr(self, name) for name in self.model_fields_set}
        for name in ("min_replicas", "max_replicas", "paused"):
            if name in changed and changed[name] is None:
                raise ValueError(f"{name} cannot be null")
        return changed


class WorkerOut(BaseModel):
    name: str
    pool: str
    pod: str
    queues: list[str]
    concurrency: int | None = None
    running_jobs: list[str]
    last_seen_s_ago: float


class KindOut(BaseModel):
    name: str
    pool: str
    description: str
    soft_time_limit_s: int
    time_limit_s: int
    max_retries: int
    params_schema: dict[str, Any]


class StatsOut(BaseModel):
    jobs_by_status: dict[str, int]
    jobs_by_kind: dict[str, int]
    outcomes: list[dict[str, Any]]
    dead_letter: int
    queues: list[QueueOut]


class StatusOut(BaseModel):
    redis: Literal["up", "down"]
    pools: dict[str, int]
    beat: Literal["up", "down", "unknown"]


class JobOut(Job):
    """A job as the API shows it: its record, and the duration estimates computed when
    it is read (never stored on the job; see renderfarm.core.estimates)."""

    estimated_duration_s: float | None = Field(
        None, description="Expected run time in seconds, from the throughput learned for its kind (run seconds "
                          "per second of media plus a per-job overhead) and its input's length; for a running "
                          "job, pulled towards what its progress says. Null until a job of its kind has succeeded.")
    estimated_start_s: float | None = Field(
        None, description="While it waits (queued or retrying): seconds from now until a worker should take it, "
                          "from the jobs ahead of it in its pool's priority order, the pool's live job slots and "
                          "its mean job time. 0: a slot is free. Null once it started, or when no worker of its "
                          "pool is live or nothing was learned yet.")
    duration_s: float | None = Field(None, description="Actual run time in seconds (started to finished) once it ran")


JobPage.model_rebuild()  # its jobs are JobOut, defined below it
