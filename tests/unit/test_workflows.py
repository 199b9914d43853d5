"""The workflow core (pure): validation, the step state machine, references, chunk fan-out."""

from __future__ import annotations

import pytest

from renderfarm.core.jobs import JobStatus
from renderfarm.core.workflows import (
    Flow,
    StepStatus,
    WorkflowSpec,
    WorkflowStatus,
    chunk_step_name,
    on_cancel,
    on_job_end,
    on_retry,
    on_submit,
    progress,
    resolve,
    status_of,
    validate_spec,
)

CLIP = "file:///data/inputs/clip.mp4"
LADDER = {"renditions": [{"height": 240}, {"height": 360}]}


def spec(steps, **extra) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"input": CLIP, "steps": steps} | extra)


def diamond(**extra) -> WorkflowSpec:
    """transcode -> [thumbnail, extract_audio -> transcribe]; probe alone."""
    return spec([
        {"name": "probe", "kind": "probe"},
        {"name": "transcode", "kind": "transcode", "params": LADDER},
        {"name": "thumbs", "kind": "thumbnail", "needs": ["transcode"],
         "input": {"from": "transcode", "output": "240p.mp4"}, "params": {"count": 2}},
        {"name": "audio", "kind": "extract_audio", "needs": ["transcode"],
         "input": {"from": "transcode", "output": "360p.mp4"}},
        {"name": "transcribe", "kind": "transcribe", "needs": ["audio"], "input": {"from": "audio"}},
    ], **extra)


def fields(errors):
    return {e["field"] for e in errors}


# --- validation ----------------------------------------------------------------------------

def test_a_valid_dag_has_no_errors():
    assert validate_spec(diamond()) == []


def test_a_cycle_is_named_with_the_steps_in_it():
    errors = validate_spec(spec([
        {"name": "a", "kind": "probe", "needs": ["c"]},
        {"name": "b", "kind": "probe", "needs": ["a"]},
        {"name": "c", "kind": "probe", "needs": ["b"]},
    ]))
    assert len(errors) == 1 and "cycle" in errors[0]["message"]
    assert errors[0]["field"].startswith("steps.") and errors[0]["field"].endswith(".needs")


def test_unknown_steps_kinds_self_needs_and_duplicate_names_are_field_errors():
    errors = validate_spec(spec([
        {"name": "a", "kind": "probe", "needs": ["nope"]},
        {"name": "b", "kind": "paint"},
        {"name": "c", "kind": "probe", "needs": ["c"]},
        {"name": "a", "kind": "probe"},
    ]))
    assert fields(errors) == {"steps.0.needs.0", "steps.1.kind", "steps.2.needs.0", "steps.3.name"}


def test_params_are_checked_against_the_kinds_params_model():
    errors = validate_spec(spec([{"name": "t", "kind": "transcode", "params": {"renditions": [{"height": 241}]}}]))
    assert fields(errors) == {"steps.0.params.renditions.0"}
    errors = validate_spec(spec([{"name": "t", "kind": "probe", "params": {"bogus": 1}}]))
    assert fields(errors) == {"steps.0.params.bogus"}


def test_a_reference_must_point_at_an_ancestor():
    errors = validate_spec(spec([
        {"name": "a", "kind": "transcode", "params": LADDER},
        {"name": "b", "kind": "thumbnail", "input": {"from": "a", "output": "240p.mp4"}},  # no needs
    ]))
    assert fields(errors) == {"steps.1.input.from"}
    assert "ancestor" in errors[0]["message"]


def test_a_reference_through_an_intermediate_step_is_an_ancestor():
    assert validate_spec(spec([
        {"name": "a", "kind": "transcode", "params": LADDER},
        {"name": "b", "kind": "probe", "needs": ["a"]},
        {"name": "c", "kind": "thumbnail", "needs": ["b"], "input": {"from": "a", "output": "360p.mp4"}},
    ])) == []


def test_a_reference_to_an_output_the_kind_cannot_write_is_an_error():
    errors = validate_spec(spec([
        {"name": "a", "kind": "transcode", "params": LADDER},
        {"name": "b", "kind": "thumbnail", "needs": ["a"], "input": {"from": "a", "output": "1080p.mp4"}},
    ]))
    assert fields(errors) == {"steps.1.input.output"}
    assert "240p.mp4" in errors[0]["message"]


def test_an_unnamed_reference_needs_a_step_with_one_output():
    errors = validate_spec(spec([
        {"name": "a", "kind": "transcode", "params": LADDER},
        {"name": "b", "kind": "thumbnail", "needs": ["a"], "input": {"from": "a"}},
    ]))
    assert fields(errors) == {"steps.1.input.output"}


def test_a_root_step_needs_an_input_from_somewhere():
    errors = validate_spec(WorkflowSpec.model_validate({"steps": [{"name": "a", "kind": "probe"}]}))
    assert fields(errors) == {"steps.0.input"}


# --- state machine ---------------------------------------------------------------------------

def started(flow: Flow, names, prefix="job-") -> Flow:
    steps = dict(flow.steps)
    for name in names:
        steps[name] = steps[name].model_copy(update={"status": StepStatus.started, "job_id": prefix + name})
    return flow.model_copy(update={"steps": steps})


def test_submit_starts_only_the_roots():
    assert on_submit(Flow.new(diamond())).start == ["probe", "transcode"]


def test_a_finished_step_starts_its_dependants_once():
    flow = started(Flow.new(diamond()), ["probe", "transcode"])
    outputs = {"240p.mp4": "file:///o/t/240p.mp4", "360p.mp4": "file:///o/t/360p.mp4"}
    first = on_job_end(flow, "job-transcode", JobStatus.succeeded, outputs)
    assert first.changed and first.start == ["thumbs", "audio"]
    # The same end reported again (a repeated call, a crash before the reply) changes nothing.
    again = on_job_end(started(first.flow, first.start), "job-transcode", JobStatus.succeeded, outputs)
    assert not again.changed and again.start == []


def test_references_resolve_to_the_producers_output_uris():
    flow = started(Flow.new(diamond()), ["probe", "transcode"])
    flow = on_job_end(flow, "job-transcode", JobStatus.succeeded,
                      {"240p.mp4": "file:///o/t/240p.mp4", "360p.mp4": "file:///o/t/360p.mp4"}).flow
    assert resolve(flow, "thumbs") == ("file:///o/t/240p.mp4", {"count": 2})
    assert resolve(flow, "probe") == (CLIP, {})


def test_fail_fast_cancels_running_steps_and_skips_waiting_ones():
    flow = started(Flow.new(diamond()), ["probe", "transcode"])
    result = on_job_end(flow, "job-transcode", JobStatus.failed, {})
    assert result.start == [] and result.cancel_jobs == ["job-probe"]
    assert {n: s.status for n, s in result.flow.steps.items() if s.status == StepStatus.skipped} == {
        "thumbs": StepStatus.skipped, "audio": StepStatus.skipped, "transcribe": StepStatus.skipped}
    assert status_of(result.flow) == WorkflowStatus.running  # probe's job is still to end
    done = on_job_end(result.flow, "job-probe", JobStatus.cancelled, {})
    assert status_of(done.flow) == WorkflowStatus.failed


def test_continue_skips_only_the_failed_steps_dependants():
    flow = started(Flow.new(diamond(failure_policy="continue")), ["probe", "transcode"])
    flow = on_job_end(flow, "job-transcode", JobStatus.succeeded,
                      {"240p.mp4": "file:///a", "360p.mp4": "file:///b"}).flow
    flow = started(flow, ["thumbs", "audio"])
    result = on_job_end(flow, "job-audio", JobStatus.failed, {})
    assert result.cancel_jobs == [] and result.flow.steps["transcribe"].status == StepStatus.skipped
    flow = on_job_end(result.flow, "job-thumbs", JobStatus.succeeded, {"thumb-0001.jpg": "file:///c"}).flow
    assert status_of(flow) == WorkflowStatus.running  # probe still runs: an independent branch
    flow = on_job_end(flow, "job-probe", JobStatus.succeeded, {}).flow
    assert status_of(flow) == WorkflowStatus.failed


def test_cancel_marks_pending_steps_cancelled_and_cancels_started_jobs():
    flow = started(Flow.new(diamond()), ["probe", "transcode"])
    result = on_cancel(flow)
    assert sorted(result.cancel_jobs) == ["job-probe", "job-transcode"]
    assert result.flow.steps["thumbs"].status == StepStatus.cancelled
    # A job that ends after the cancel (succeeded) starts nothing.
    after = on_job_end(result.flow, "job-transcode", JobStatus.succeeded, {"240p.mp4": "x", "360p.mp4": "y"})
    assert after.start == []
    end = on_job_end(after.flow, "job-probe", JobStatus.cancelled, {})
    assert status_of(end.flow) == WorkflowStatus.cancelled


def test_retry_reruns_failed_cancelled_and_skipped_steps_and_keeps_succeeded_ones():
    flow = started(Flow.new(diamond(failure_policy="continue")), ["probe", "transcode"])
    flow = on_job_end(flow, "job-transcode", JobStatus.succeeded, {"240p.mp4": "file:///a", "360p.mp4": "file:///b"}).flow
    flow = started(flow, ["thumbs", "audio"])
    flow = on_job_end(flow, "job-audio", JobStatus.failed, {}).flow
    flow = on_job_end(flow, "job-thumbs", JobStatus.succeeded, {"thumb-0001.jpg": "file:///c"}).flow
    flow = on_job_end(flow, "job-probe", JobStatus.succeeded, {}).flow
    assert on_retry(started(flow, [])).changed
    result = on_retry(flow)
    assert result.start == ["audio"]
    assert result.flow.steps["audio"].previous_jobs == ["job-audio"]
    assert result.flow.steps["transcribe"].status == StepStatus.pending
    assert result.flow.steps["thumbs"].job_id == "job-thumbs"  # kept
    assert not on_retry(result.flow).changed  # a running workflow is not retried


def test_progress_counts_finished_steps_whole_and_started_ones_by_their_job():
    flow = started(Flow.new(spec([{"name": "a", "kind": "probe"}, {"name": "b", "kind": "probe"}])), ["a", "b"])
    flow = on_job_end(flow, "job-a", JobStatus.succeeded, {}).flow
    assert progress(flow, lambda job_id: 50.0) == 75.0


# --- chunk fan-out ---------------------------------------------------------------------------

def chunked(kinds_spec=None) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"input": CLIP, "steps": [
        {"name": "split", "kind": "chunk_split", "each_chunk": {"crf": 23}},
        {"name": "concat", "kind": "chunk_concat", "needs": ["split"]},
    ]})


def test_a_split_expands_into_one_encode_per_chunk_longest_first_feeding_the_concat():
    flow = started(Flow.new(chunked()), ["split"])
    chunks = [{"index": 0, "start_s": 0, "end_s": 4, "frames": 100, "uri": "file:///c0"},
              {"index": 1, "start_s": 4, "end_s": 14, "frames": 250, "uri": "file:///c1"},
              {"index": 2, "start_s": 14, "end_s": 20, "frames": 150, "uri": "file:///c2"}]
    result = on_job_end(flow, "job-split", JobStatus.succeeded, {}, {"chunks": chunks})
    names = [chunk_step_name("split", i) for i in range(3)]
    assert result.start == [names[1], names[2], names[0]]  # longest first
    encode = result.flow.spec.step(names[1])
    assert (encode.kind, encode.input, encode.params, encode.needs) == ("chunk_encode", "file:///c1", {"crf": 23},
                                                                        ["split"])
    concat = result.flow.spec.step("concat")
    assert concat.needs == ["split", *names]
    assert concat.params["chunks"] == [{"from": n} for n in names]  # index order
    flow = started(result.flow, names)
    for i, name in enumerate(names):
        flow = on_job_end(flow, "job-" + name, JobStatus.succeeded, {"chunk.mp4": f"file:///e{i}"}).flow
    assert resolve(flow, "concat") == (CLIP, {"chunks": ["file:///e0", "file:///e1", "file:///e2"]})


def test_a_retried_split_keeps_the_chunks_already_encoded():
    flow = started(Flow.new(chunked()), ["split"])
    chunks = [{"index": i, "start_s": i, "end_s": i + 1, "uri": f"file:///c{i}"} for i in range(2)]
    flow = on_job_end(flow, "job-split", JobStatus.succeeded, {}, {"chunks": chunks}).flow
    flow = started(flow, [chunk_step_name("split", 0), chunk_step_name("split", 1)])
    flow = on_job_end(flow, "job-" + chunk_step_name("split", 0), JobStatus.succeeded, {"c.mp4": "file:///e0"}).flow
    flow = on_job_end(flow, "job-" + chunk_step_name("split", 1), JobStatus.failed, {}).flow
    assert status_of(flow) == WorkflowStatus.failed
    result = on_retry(flow)
    assert result.start == [chunk_step_name("split", 1)]  # only the missing chunk is encoded again


@pytest.mark.parametrize("status", [JobStatus.running, JobStatus.queued])
def test_a_job_that_has_not_ended_changes_nothing(status):
    flow = started(Flow.new(diamond()), ["probe"])
    assert not on_job_end(flow, "job-probe", status, {}).changed


def test_each_chunk_belongs_on_a_split_step_only():
    errors = validate_spec(spec([{"name": "a", "kind": "probe", "each_chunk": {"crf": 20}}]))
    assert fields(errors) == {"steps.0.each_chunk"}


def test_a_chunked_dag_validates_against_the_chunk_kinds_params():
    """The chunk kinds come with the media kinds; stand-in registry entries with the
    contract's params shape (concat: chunks = URIs) check the validation here."""
    from pydantic import BaseModel, ConfigDict

    from renderfarm.core.kinds import KINDS, JobKind
    from renderfarm.core.queues import WorkloadClass

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

    class Split(Strict):
        seconds: float = 10

    class Encode(Strict):
        crf: int = 23

    class Concat(Strict):
        chunks: list[str]

    kinds = dict(KINDS) | {name: JobKind(name, WorkloadClass.cpu, model, "", 60, 90) for name, model in
                           (("chunk_split", Split), ("chunk_encode", Encode), ("chunk_concat", Concat))}
    assert validate_spec(chunked(), kinds) == []  # the concat's chunks come from the split
    bad = WorkflowSpec.model_validate({"input": CLIP, "steps": [
        {"name": "split", "kind": "chunk_split", "each_chunk": {"crf": "high"}},
        {"name": "concat", "kind": "chunk_concat", "needs": ["split"]}]})
    assert fields(validate_spec(bad, kinds)) == {"steps.0.each_chunk.crf"}
    alone = WorkflowSpec.model_validate({"input": CLIP, "steps": [{"name": "concat", "kind": "chunk_concat"}]})
    assert fields(validate_spec(alone, kinds)) == {"steps.0.params.chunks"}
