"""Workflows (pure): a DAG of steps, each an ordinary job; validation and the state machine.

A step's ``input`` or any top-level value of its ``params`` may be a reference
``{"from": "<step>", "output": "<name>"}`` to an ancestor's output; the engine
replaces it with that output's URI just before the step's job is submitted.

Everything here is a function of its arguments: the store (workflow_store.py) reads
the workflow, asks this module what changes, and writes the answer in one atomic call.
"""

from __future__ import annotations

from enum import StrEnum
from graphlib import CycleError, TopologicalSorter
from typing import Any, Callable, Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from renderfarm.core.chunking import MAX_CHUNKS
from renderfarm.core.jobs import JobStatus
from renderfarm.core.kinds import KINDS, JobKind, output_names
from renderfarm.core.queues import Priority

STEP_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
MAX_STEPS = 200  # what a client may submit
# What a stored workflow may grow to: each chunk_split step (one per rendition, at
# most 8) fans out into up to MAX_CHUNKS encode steps plus an audio step.
MAX_STORED_STEPS = MAX_STEPS + 8 * (MAX_CHUNKS + 1)
# What a reference stands for while params are validated before it is resolved.
PLACEHOLDER_URI = "file:///workflow-reference"

# The chunked-transcode kinds (media branch): a split's result fans out into one encode per chunk.
CHUNK_SPLIT, CHUNK_ENCODE, CHUNK_CONCAT = "chunk_split", "chunk_encode", "chunk_concat"
EXTRACT_AUDIO = "extract_audio"


class FailurePolicy(StrEnum):
    fail_fast = "fail_fast"  # the first failure cancels what runs and skips what waits
    continue_ = "continue"  # only the failed step's dependants are skipped; other branches go on


class StepRef(BaseModel):
    """An ancestor step's output. ``output`` omitted: the step's only output."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: str = Field(alias="from", pattern=STEP_NAME)
    output: str | None = Field(default=None, min_length=1, max_length=255)


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=STEP_NAME)
    kind: str = Field(min_length=1, max_length=64)
    input: str | StepRef | None = Field(default=None, description="a media reference, a step reference, or "
                                                                  "omitted: the workflow's input")
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority | None = Field(default=None, description="omitted: the workflow's priority")
    needs: list[str] = Field(default_factory=list, max_length=MAX_STORED_STEPS)
    each_chunk: dict[str, Any] | None = Field(default=None, description=f"on a {CHUNK_SPLIT} step: the params of "
                                              f"the {CHUNK_ENCODE} step made for each chunk")


class WorkflowSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | None = Field(default=None, min_length=1, max_length=4096,
                              description="what steps without an input of their own read")
    steps: list[StepSpec] = Field(min_length=1, max_length=MAX_STORED_STEPS)
    failure_policy: FailurePolicy = FailurePolicy.fail_fast
    priority: Priority = Priority.normal

    def step(self, name: str) -> StepSpec:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


def ref_of(value: Any) -> StepRef | None:
    """A params value (or input) that is a step reference, parsed; None for a plain value."""
    if isinstance(value, StepRef):
        return value
    if isinstance(value, dict) and "from" in value and set(value) <= {"from", "output"}:
        try:
            return StepRef.model_validate(value)
        except ValidationError:
            return None
    return None


def step_refs(step: StepSpec) -> list[tuple[str, StepRef]]:
    """(field path inside the step, reference) for every reference the step makes."""
    found: list[tuple[str, StepRef]] = []
    if isinstance(step.input, StepRef):
        found.append(("input", step.input))
    for key, value in step.params.items():
        if (ref := ref_of(value)) is not None:
            found.append((f"params.{key}", ref))
        elif isinstance(value, list):  # a fan-in: a list of references (chunk_concat's chunks)
            for i, item in enumerate(value):
                if (ref := ref_of(item)) is not None:
                    found.append((f"params.{key}.{i}", ref))
    return found


def _with_placeholders(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        if ref_of(value) is not None:
            out[key] = PLACEHOLDER_URI
        elif isinstance(value, list) and any(ref_of(item) is not None for item in value):
            out[key] = [PLACEHOLDER_URI if ref_of(item) is not None else item for item in value]
        else:
            out[key] = value
    return out


def ancestors(spec: WorkflowSpec) -> dict[str, set[str]]:
    """Step -> every step it waits for, directly or not (the spec must be acyclic)."""
    needs = {step.name: set(step.needs) for step in spec.steps}
    order = list(TopologicalSorter(needs).static_order())
    found: dict[str, set[str]] = {}
    for name in order:
        if name not in needs:
            continue
        found[name] = set()
        for parent in needs[name]:
            found[name] |= {parent} | found.get(parent, set())
    return found


def validate_spec(spec: WorkflowSpec, kinds: dict[str, JobKind] | None = None) -> list[dict[str, str]]:
    """Field errors (``{"field": "steps.2.needs.0", "message": ...}``); empty when valid."""
    kinds = KINDS if kinds is None else kinds
    errors: list[dict[str, str]] = []

    def error(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    if len(spec.steps) > MAX_STEPS:  # a chunk_split's fan-out may grow it later, up to MAX_STORED_STEPS
        error("steps", f"at most {MAX_STEPS} steps, not {len(spec.steps)}")
    names: dict[str, int] = {}
    for i, step in enumerate(spec.steps):
        if step.name in names:
            error(f"steps.{i}.name", f"step name {step.name!r} is used twice")
        names.setdefault(step.name, i)
    for i, step in enumerate(spec.steps):
        if step.kind not in kinds:
            error(f"steps.{i}.kind", f"unknown kind {step.kind!r}; known kinds: {', '.join(kinds)}")
        for j, need in enumerate(step.needs):
            if need == step.name:
                error(f"steps.{i}.needs.{j}", "a step cannot need itself")
            elif need not in names:
                error(f"steps.{i}.needs.{j}", f"unknown step {need!r}")
        if step.input is None and spec.input is None:
            error(f"steps.{i}.input", "no input: give the step one, or the workflow an input")
    if errors:
        return errors
    try:
        TopologicalSorter({step.name: set(step.needs) for step in spec.steps}).prepare()
    except CycleError as exc:
        cycle = exc.args[1]
        error(f"steps.{names[cycle[0]]}.needs", "the steps form a cycle: " + " -> ".join(cycle))
        return errors
    above = ancestors(spec)
    for i, step in enumerate(spec.steps):
        kind = kinds[step.kind]
        try:
            kind.params_model.model_validate(_with_placeholders(_submitted_params(spec, step)))
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(part) for part in err.get("loc", ()))
                error(f"steps.{i}.params" + (f".{loc}" if loc else ""), err.get("msg", "invalid"))
        if step.kind == "transcode" and step.params.get("chunking") not in (None, False):
            # A step's job runs as it is; chunking makes a workflow of its own.
            error(f"steps.{i}.params.chunking", "a transcode step runs single-pass: chunk it with the "
                                                "chunked-transcode template's steps (chunk_split, chunk_concat)")
        if step.each_chunk is not None:
            if step.kind != CHUNK_SPLIT:
                error(f"steps.{i}.each_chunk", f"only a {CHUNK_SPLIT} step fans out into chunks")
            elif CHUNK_ENCODE in kinds:
                try:
                    kinds[CHUNK_ENCODE].params_model.model_validate(step.each_chunk)
                except ValidationError as exc:
                    for err in exc.errors():
                        loc = ".".join(str(part) for part in err.get("loc", ()))
                        error(f"steps.{i}.each_chunk" + (f".{loc}" if loc else ""), err.get("msg", "invalid"))
        for field, ref in step_refs(step):
            source = ref.from_
            if source not in names:
                error(f"steps.{i}.{field}.from", f"unknown step {source!r}")
                continue
            if source not in above[step.name]:
                error(f"steps.{i}.{field}.from", f"step {source!r} is not an ancestor of {step.name!r}: "
                                                 "add it (or a step after it) to needs")
                continue
            producer = spec.steps[names[source]]
            known = _outputs_of(producer, kinds)
            if ref.output is None:
                if known is not None and len(known) != 1:
                    error(f"steps.{i}.{field}.output", f"step {source!r} writes {len(known)} outputs: name one")
            elif known is not None and ref.output not in known:
                error(f"steps.{i}.{field}.output", f"step {source!r} ({producer.kind}) writes no output "
                                                   f"{ref.output!r}; it writes: {', '.join(sorted(known)) or 'none'}")
    return errors


def _submitted_params(spec: WorkflowSpec, step: StepSpec) -> dict[str, Any]:
    """A step's params as its job will get them: a concat after a split gets its
    ``chunks`` when the split has run (a placeholder stands in for them until then)."""
    if step.kind == CHUNK_CONCAT and "chunks" not in step.params and any(
            spec.step(need).kind == CHUNK_SPLIT for need in step.needs):
        return dict(step.params) | {"chunks": [PLACEHOLDER_URI]}
    return step.params


def _outputs_of(step: StepSpec, kinds: dict[str, JobKind]) -> frozenset[str] | None:
    kind = kinds.get(step.kind)
    if kind is None:
        return None
    try:
        params = kind.params_model.model_validate(_with_placeholders(step.params))
    except ValidationError:
        return None
    return output_names(kind.name, params)


# --- state ------------------------------------------------------------------------------


class StepStatus(StrEnum):
    pending = "pending"  # waits for its needs
    started = "started"  # its job exists (queued, running or retrying)
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    skipped = "skipped"  # never ran: something it needs failed


DONE_STEPS = frozenset({StepStatus.succeeded, StepStatus.failed, StepStatus.cancelled, StepStatus.skipped})


class WorkflowStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


TERMINAL_WORKFLOW = frozenset({WorkflowStatus.succeeded, WorkflowStatus.failed, WorkflowStatus.cancelled})


class StepState(BaseModel):
    status: StepStatus = StepStatus.pending
    job_id: str | None = None
    outputs: dict[str, str] = Field(default_factory=dict)  # name -> URI, once succeeded
    previous_jobs: list[str] = Field(default_factory=list)  # jobs of earlier runs (before a retry)
    error: str | None = None  # why it failed without a job (a reference that did not resolve)


class Flow(BaseModel):
    """What the store keeps of a workflow besides its identity: the (expanded) spec, the
    step table, and whether it was cancelled."""

    spec: WorkflowSpec
    steps: dict[str, StepState]
    cancelled: bool = False

    @classmethod
    def new(cls, spec: WorkflowSpec) -> "Flow":
        return cls(spec=spec, steps={step.name: StepState() for step in spec.steps})


def status_of(flow: Flow) -> WorkflowStatus:
    states = [state.status for state in flow.steps.values()]
    if any(s in (StepStatus.started,) for s in states):
        return WorkflowStatus.running
    if flow.cancelled:
        return WorkflowStatus.cancelled
    if any(s == StepStatus.pending for s in states):
        return WorkflowStatus.running
    if all(s == StepStatus.succeeded for s in states):
        return WorkflowStatus.succeeded
    if any(s == StepStatus.cancelled for s in states) and not any(s == StepStatus.failed for s in states):
        return WorkflowStatus.cancelled
    return WorkflowStatus.failed


def ready_steps(flow: Flow) -> list[str]:
    """Pending steps whose needs all succeeded, in spec order (nothing starts in a
    cancelled workflow, nor after a failure under fail_fast)."""
    if flow.cancelled:
        return []
    if flow.spec.failure_policy == FailurePolicy.fail_fast and any(
            s.status in (StepStatus.failed, StepStatus.cancelled) for s in flow.steps.values()):
        return []
    return [step.name for step in flow.spec.steps
            if flow.steps[step.name].status == StepStatus.pending
            and all(flow.steps[need].status == StepStatus.succeeded for need in step.needs)]


def _dependants(spec: WorkflowSpec, names: Iterable[str]) -> set[str]:
    """Every step that waits, directly or not, for one of ``names``."""
    above = ancestors(spec)
    roots = set(names)
    return {name for name, ups in above.items() if ups & roots}


def _settle(flow: Flow) -> tuple[Flow, list[str]]:
    """Skip what can no longer run; under fail_fast, name the started jobs to cancel."""
    steps = {name: state.model_copy() for name, state in flow.steps.items()}
    bad = [name for name, state in steps.items() if state.status in (StepStatus.failed, StepStatus.cancelled,
                                                                      StepStatus.skipped)]
    to_cancel: list[str] = []
    if flow.cancelled or (bad and flow.spec.failure_policy == FailurePolicy.fail_fast):
        target = StepStatus.cancelled if flow.cancelled else StepStatus.skipped
        for state in steps.values():
            if state.status == StepStatus.pending:
                state.status = target
            elif state.status == StepStatus.started and state.job_id:
                to_cancel.append(state.job_id)
    else:
        for name in _dependants(flow.spec, bad):
            if steps[name].status == StepStatus.pending:
                steps[name].status = StepStatus.skipped
    return flow.model_copy(update={"steps": steps}), to_cancel


# What a step's job ended as, for the step table.
_STEP_OF_JOB = {JobStatus.succeeded: StepStatus.succeeded, JobStatus.failed: StepStatus.failed,
                JobStatus.cancelled: StepStatus.cancelled}


class Advance(BaseModel):
    """The answer to "a step's job ended": the new flow, the steps to start now, the
    jobs to cancel (fail_fast), and whether anything changed."""

    flow: Flow
    start: list[str] = Field(default_factory=list)
    cancel_jobs: list[str] = Field(default_factory=list)
    changed: bool = False


def step_of_job(flow: Flow, job_id: str) -> str | None:
    for name, state in flow.steps.items():
        if state.job_id == job_id:
            return name
    return None


def on_job_end(flow: Flow, job_id: str, job_status: JobStatus, outputs: dict[str, str],
               metadata: dict[str, Any] | None = None) -> Advance:
    """A step's job reached ``job_status``. Idempotent: a job that is not the live job of
    a started step changes nothing."""
    name = step_of_job(flow, job_id)
    if name is None or flow.steps[name].status != StepStatus.started or job_status not in _STEP_OF_JOB:
        return Advance(flow=flow)
    steps = dict(flow.steps)
    steps[name] = steps[name].model_copy(update={"status": _STEP_OF_JOB[job_status],
                                                 "outputs": dict(outputs) if job_status == JobStatus.succeeded else {}})
    flow = flow.model_copy(update={"steps": steps})
    step = flow.spec.step(name)
    if job_status == JobStatus.succeeded and step.kind == CHUNK_SPLIT:
        flow = expand_chunks(flow, name, (metadata or {}).get("chunks") or [],
                             has_audio=bool((metadata or {}).get("has_audio")))
    flow, to_cancel = _settle(flow)
    return Advance(flow=flow, start=ready_steps(flow), cancel_jobs=to_cancel, changed=True)


def mark_started(flow: Flow, name: str, job_id: str) -> Flow:
    steps = dict(flow.steps)
    steps[name] = steps[name].model_copy(update={"status": StepStatus.started, "job_id": job_id, "error": None})
    return flow.model_copy(update={"steps": steps})


def fail_step(flow: Flow, name: str, message: str) -> Advance:
    """A ready step that cannot start (its input did not resolve) fails without a job."""
    steps = dict(flow.steps)
    steps[name] = steps[name].model_copy(update={"status": StepStatus.failed, "error": message})
    flow, to_cancel = _settle(flow.model_copy(update={"steps": steps}))
    return Advance(flow=flow, start=ready_steps(flow), cancel_jobs=to_cancel, changed=True)


def on_submit(flow: Flow) -> Advance:
    return Advance(flow=flow, start=ready_steps(flow), changed=True)


def on_cancel(flow: Flow) -> Advance:
    """Pending steps become cancelled (they never run); started jobs are cancelled."""
    if status_of(flow) in TERMINAL_WORKFLOW:
        return Advance(flow=flow)
    flow, to_cancel = _settle(flow.model_copy(update={"cancelled": True}))
    return Advance(flow=flow, cancel_jobs=to_cancel, changed=True)


def on_retry(flow: Flow) -> Advance:
    """Failed, cancelled and skipped steps (and so everything that depends on them) wait
    again; succeeded steps keep their outputs. Only a finished workflow is retried."""
    if status_of(flow) not in (WorkflowStatus.failed, WorkflowStatus.cancelled):
        return Advance(flow=flow)
    steps = {}
    for name, state in flow.steps.items():
        if state.status in (StepStatus.failed, StepStatus.cancelled, StepStatus.skipped):
            previous = state.previous_jobs + ([state.job_id] if state.job_id else [])
            state = StepState(previous_jobs=previous)
        steps[name] = state
    flow = flow.model_copy(update={"steps": steps, "cancelled": False})
    return Advance(flow=flow, start=ready_steps(flow), changed=True)


# --- references and fan-out -----------------------------------------------------------


class UnresolvedReference(ValueError):
    pass


def _resolve_one(flow: Flow, ref: StepRef) -> str:
    outputs = flow.steps[ref.from_].outputs
    if ref.output is None:
        if len(outputs) != 1:
            raise UnresolvedReference(f"step {ref.from_!r} wrote {len(outputs)} outputs; the reference names none")
        return next(iter(outputs.values()))
    try:
        return outputs[ref.output]
    except KeyError:
        raise UnresolvedReference(f"step {ref.from_!r} wrote no output {ref.output!r} "
                                  f"(it wrote: {', '.join(sorted(outputs)) or 'none'})") from None


def resolve(flow: Flow, name: str) -> tuple[str, dict[str, Any]]:
    """The step's input URI and params with every reference replaced by its output's URI."""
    step = flow.spec.step(name)
    if step.input is None:
        assert flow.spec.input is not None  # validation guarantees it
        uri = flow.spec.input
    elif isinstance(step.input, StepRef):
        uri = _resolve_one(flow, step.input)
    else:
        uri = step.input
    params: dict[str, Any] = {}
    for key, value in step.params.items():
        if (ref := ref_of(value)) is not None:
            params[key] = _resolve_one(flow, ref)
        elif isinstance(value, list):
            params[key] = [_resolve_one(flow, r) if (r := ref_of(item)) is not None else item for item in value]
        else:
            params[key] = value
    return uri, params


def chunk_step_name(split: str, index: int) -> str:
    return f"{split}.chunk-{index:04d}"


def audio_step_name(concat: str) -> str:
    return f"{concat}.audio"


def expand_chunks(flow: Flow, split: str, chunks: list[dict[str, Any]], *, has_audio: bool = False) -> Flow:
    """One ``chunk_encode`` step per chunk of a finished ``chunk_split`` (longest first,
    so the longest work starts first), each feeding every ``chunk_concat`` step that
    needs the split: its ``chunks`` param becomes the encoded chunks in index order.

    Where the source has audio, each such concat also gets an ``extract_audio`` step
    (AAC at the concat's bitrate) that starts before the chunks: the audio encodes
    beside them on another worker instead of after them in the concat, which is left
    a copy.

    An encode step's params are the split step's ``each_chunk``. Steps
    already expanded (a retried workflow) are kept, so resume re-encodes only what is missing."""
    split_step = flow.spec.step(split)
    encode_params = split_step.each_chunk or {}
    ordered = sorted(chunks, key=lambda c: (-(float(c.get("end_s", 0)) - float(c.get("start_s", 0))),
                                            int(c.get("index", 0))))
    existing = {step.name for step in flow.spec.steps}
    new_steps = list(flow.spec.steps)
    states = dict(flow.steps)
    audio_of: dict[str, str] = {}
    for step in flow.spec.steps:
        if step.kind != CHUNK_CONCAT or split not in step.needs or "audio" in step.params or not has_audio:
            continue
        name = audio_of[step.name] = audio_step_name(step.name)
        if name in existing:
            continue
        audio = {"format": "m4a", "bitrate_kbps": int(step.params.get("audio_bitrate_kbps", 128)),
                 "sample_rate": None, "channels": None}
        new_steps.append(StepSpec(name=name, kind=EXTRACT_AUDIO, input=split_step.input, params=audio,
                                  priority=split_step.priority, needs=[split]))
        states[name] = StepState()
    by_index: list[tuple[int, str]] = []
    for chunk in ordered:
        index = int(chunk["index"])
        name = chunk_step_name(split, index)
        by_index.append((index, name))
        if name in existing:
            continue
        new_steps.append(StepSpec(name=name, kind=CHUNK_ENCODE, input=str(chunk["uri"]), params=dict(encode_params),
                                  priority=split_step.priority, needs=[split]))
        states[name] = StepState()
    chunk_names = [name for _, name in sorted(by_index)]
    for i, step in enumerate(new_steps):
        if step.kind == CHUNK_CONCAT and split in step.needs:
            audio = [audio_of[step.name]] if step.name in audio_of else []
            needs = list(dict.fromkeys(step.needs + audio + chunk_names))
            params = dict(step.params) | {"chunks": [{"from": name} for name in chunk_names]}
            if audio:
                params["audio"] = {"from": audio[0], "output": "audio.m4a"}
            new_steps[i] = step.model_copy(update={"needs": needs, "params": params})
    spec = flow.spec.model_copy(update={"steps": new_steps})
    return flow.model_copy(update={"spec": spec, "steps": states})


# --- views ------------------------------------------------------------------------------


def progress(flow: Flow, job_progress: Callable[[str], float]) -> float:
    """0-100 over all steps: a finished step counts whole, a started one by its job."""
    if not flow.steps:
        return 0.0
    total = 0.0
    for state in flow.steps.values():
        if state.status in DONE_STEPS:
            total += 100.0
        elif state.status == StepStatus.started and state.job_id:
            total += max(0.0, min(100.0, job_progress(state.job_id)))
    return round(total / len(flow.steps), 2)

