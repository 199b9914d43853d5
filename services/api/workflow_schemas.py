"""Request and response models of /v1/workflows and /v1/workflow-templates."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from renderfarm.core.queues import Priority
from renderfarm.core.workflow_templates import TEMPLATES
from renderfarm.core.workflows import MAX_STEPS, FailurePolicy, StepSpec, StepStatus, WorkflowStatus

TemplateName = StrEnum("TemplateName", {name: name for name in TEMPLATES})


class SubmitWorkflowRequest(BaseModel):
    """A named template with its params, or an explicit DAG of steps."""

    model_config = ConfigDict(extra="forbid")

    template: TemplateName | None = Field(default=None, description="a registered template (GET /v1/workflow-templates)")
    input: str | None = Field(default=None, min_length=1, max_length=4096,
                              description="the media the workflow works on (file:///path under an allowed root, "
                                          "or http(s)://); steps without an input of their own read it")
    params: dict[str, Any] = Field(default_factory=dict, description="the template's params")
    steps: list[StepSpec] | None = Field(default=None, min_length=1, max_length=MAX_STEPS,
                                         description="an explicit DAG (instead of a template)")
    failure_policy: FailurePolicy | None = Field(default=None, description="fail_fast (default for a DAG) or continue")
    priority: Priority = Priority.normal
    labels: dict[str, Annotated[str, Field(max_length=256)]] = Field(default_factory=dict, max_length=32)


class StepOut(BaseModel):
    name: str
    kind: str
    needs: list[str]
    status: StepStatus
    job_id: str | None = None
    job_status: str | None = None
    progress: float = 0.0
    outputs: dict[str, str] = Field(default_factory=dict)
    previous_jobs: list[str] = Field(default_factory=list)
    error: str | None = None
    estimated_duration_s: float | None = Field(None, description="The step's job duration: actual once it ran, "
                                               "else the estimate learned for its kind (see Job)")


class WorkflowOut(BaseModel):
    id: str
    status: WorkflowStatus
    template: str | None = None
    input: str | None = None
    failure_policy: FailurePolicy
    priority: Priority
    progress: float = Field(description="0-100 over all steps")
    steps: list[StepOut]
    labels: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    estimated_duration_s: float | None = Field(
        None, description="Start to end along the critical path of the steps' durations (actual for steps that "
                          "ran, estimated for the others). Null while a step's kind has nothing learned yet.")
    estimated_remaining_s: float | None = Field(
        None, description="Seconds from now until the last step should end: the critical path of what is left "
                          "(a waiting step's expected start plus its duration; steps not yet submitted count "
                          "their duration only). 0 once the workflow ended.")


class WorkflowPageOut(BaseModel):
    workflows: list[WorkflowOut]
    next_cursor: str | None = None


class TemplateStepOut(BaseModel):
    name: str
    kind: str
    needs: list[str]


class WorkflowTemplateOut(BaseModel):
    name: str
    description: str
    params_schema: dict[str, Any]
    steps: list[TemplateStepOut] = Field(description="the steps with default params, as this farm runs them")
    left_out: list[str] = Field(default_factory=list, description="steps whose kind this farm does not have")
