"""A workflow's duration estimate: the critical path over its steps' estimates.

Each step counts what its job says (the actual duration once it ran, the estimate
while it waits or runs); a step with no job yet counts the learned estimate for its
kind on the workflow's input (or its own, when it names one): the steps of a workflow
mostly work on the same media length, and a step fed by another step's output is taken
to be as long as the workflow's input. A step that was skipped counts nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from renderfarm.core import estimate_model as model
from renderfarm.core import estimates
from renderfarm.core import workflows as wf
from renderfarm.core.jobs import TERMINAL_STATUSES, Job, JobStatus
from renderfarm.core.store import JobStore


@dataclass(frozen=True)
class WorkflowEstimate:
    estimated_duration_s: float | None = None  # start to end, along the critical path
    estimated_remaining_s: float | None = None  # from now until the last step should end
    steps: dict[str, float | None] = field(default_factory=dict)  # step -> its job's duration (actual or expected)


def _step_jobs(store: JobStore, flow: wf.Flow) -> dict[str, Job]:
    """Step name -> its job, in one round trip (a job deleted meanwhile is left out)."""
    named = [(name, state.job_id) for name, state in flow.steps.items() if state.job_id]
    jobs = store.get_many([job_id for _, job_id in named])
    return {name: job for (name, _), job in zip(named, jobs) if job is not None}


def for_flow(store: JobStore, flow: wf.Flow, now: float | None = None) -> WorkflowEstimate:
    now = time.time() if now is None else now
    specs = {step.name: step for step in flow.spec.steps}
    jobs = _step_jobs(store, flow)
    job_estimates = dict(zip(jobs, estimates.for_jobs(store, list(jobs.values()), now)))
    unsent = [name for name, state in flow.steps.items()
              if name not in jobs and state.status != wf.StepStatus.skipped and name in specs]
    unsent_s = dict(zip(unsent, estimates.for_specs(store.redis, [
        (specs[name].kind, specs[name].params,
         specs[name].input if isinstance(specs[name].input, str) else flow.spec.input) for name in unsent])))

    total: dict[str, float | None] = {}
    remaining: dict[str, float | None] = {}
    for name, state in flow.steps.items():
        if name in jobs:
            job, estimate = jobs[name], job_estimates[name]
            if job.status in TERMINAL_STATUSES:
                total[name] = estimate.duration_s or 0.0
                remaining[name] = 0.0
            elif job.status == JobStatus.running:
                total[name] = estimate.estimated_duration_s
                elapsed = now - job.started_at.timestamp() if job.started_at else 0.0
                remaining[name] = None if total[name] is None else max(0.0, total[name] - elapsed)
            else:
                total[name] = estimate.estimated_duration_s
                remaining[name] = None if total[name] is None or estimate.estimated_start_s is None \
                    else estimate.estimated_start_s + total[name]
        elif state.status in wf.DONE_STEPS:
            total[name] = remaining[name] = 0.0  # skipped, or failed before its job was made
        else:
            total[name] = remaining[name] = unsent_s.get(name)
    needs = {name: specs[name].needs if name in specs else [] for name in flow.steps}
    duration = model.critical_path({name: (needs[name], total[name]) for name in flow.steps})
    left = model.critical_path({name: (needs[name], remaining[name]) for name in flow.steps})
    return WorkflowEstimate(estimated_duration_s=None if duration is None else round(duration, 3),
                            estimated_remaining_s=None if left is None else round(left, 3), steps=total)
