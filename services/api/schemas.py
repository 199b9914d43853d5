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

    input: str = Field(min_length=1, max_length=4096, description="file:///path under an allowed root, or http(s)://")
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
    jobs: list[Job]
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
