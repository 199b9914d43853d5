"""Which transcodes run chunked, and the chunked-transcode workflow they become (pure)."""

from __future__ import annotations

from renderfarm.core.chunked_transcode import chunked_spec, chunking_of
from renderfarm.core.params import Chunking, TranscodeParams
from renderfarm.core.workflows import Flow, StepStatus, WorkflowSpec, expand_chunks, on_job_end, on_retry, validate_spec
from renderfarm.core.jobs import JobStatus


def params(**extra) -> TranscodeParams:
    return TranscodeParams.model_validate({"renditions": [{"height": 240, "crf": 23}, {"height": 480}]} | extra)


def test_explicit_chunking_always_routes_and_automatic_only_when_set():
    explicit = params(chunking={"chunk_duration_s": 10, "split_on": "scenes"})
    assert chunking_of(explicit, None, 30) == Chunking(chunk_duration_s=10, split_on="scenes")
    assert chunking_of(params(), None, 30) is None  # off by default
    auto = chunking_of(params(), 600, 45)
    assert auto == Chunking(chunk_duration_s=45, min_duration_s=600)  # the split knows the duration
    assert chunking_of(params(chunking=False), 600, 45) is None  # a job may opt out of the farm's setting
    opted_out = WorkflowSpec.model_validate({"input": "file:///in.mp4", "steps": [
        {"name": "t", "kind": "transcode", "params": {"renditions": [{"height": 240}], "chunking": False}}]})
    assert validate_spec(opted_out) == []


def test_one_split_and_one_concat_per_rendition_with_the_rendition_settings():
    spec = chunked_spec("file:///in.mp4", params(chunking={"chunk_duration_s": 10, "threads": 1}),
                        Chunking(chunk_duration_s=10, threads=1), priority="high")
    assert validate_spec(spec) == []
    assert [(s.name, s.kind, s.needs) for s in spec.steps] == [
        ("split-0", "chunk_split", []), ("concat-0", "chunk_concat", ["split-0"]),
        ("split-1", "chunk_split", []), ("concat-1", "chunk_concat", ["split-1"])]
    assert spec.step("split-0").each_chunk == {"name": "240p", "video_codec": "h264", "height": 240, "crf": 23,
                                               "video_bitrate_kbps": None, "preset": "veryfast", "threads": 1}
    assert spec.step("concat-1").params == {"name": "480p", "audio_bitrate_kbps": 128}
    assert spec.step("split-0").params["chunk_duration_s"] == 10 and spec.priority == "high"


def test_each_split_fans_out_only_into_its_own_concat():
    spec = chunked_spec("file:///in.mp4", params(), Chunking(), priority="normal")
    flow = Flow.new(spec)
    flow = flow.model_copy(update={"steps": flow.steps | {"split-0": flow.steps["split-0"].model_copy(
        update={"status": StepStatus.started, "job_id": "j0"})}})
    chunks = [{"index": i, "start_s": 10.0 * i, "end_s": 10.0 * i + (5 if i == 0 else 10), "uri": f"file:///c{i}"}
              for i in range(3)]
    advance = on_job_end(flow, "j0", JobStatus.succeeded, {}, {"chunks": chunks})
    assert [n for n in advance.start if "chunk" in n] == ["split-0.chunk-0001", "split-0.chunk-0002", "split-0.chunk-0000"]  # longest first
    concat0, concat1 = advance.flow.spec.step("concat-0"), advance.flow.spec.step("concat-1")
    assert concat0.params["chunks"] == [{"from": f"split-0.chunk-{i:04d}"} for i in range(3)]
    assert "chunks" not in concat1.params and concat1.needs == ["split-1"]


def test_a_transcode_step_with_chunking_is_refused_in_a_dag():
    spec = WorkflowSpec.model_validate({"input": "file:///in.mp4", "steps": [
        {"name": "t", "kind": "transcode", "params": {"renditions": [{"height": 240}], "chunking": {}}}]})
    assert [e["field"] for e in validate_spec(spec)] == ["steps.0.params.chunking"]


def test_expansion_again_keeps_the_chunk_steps_already_there():
    spec = chunked_spec("file:///in.mp4", params(), Chunking(), priority="normal")
    chunks = [{"index": i, "start_s": i, "end_s": i + 1, "uri": f"file:///c{i}"} for i in range(2)]
    once = expand_chunks(Flow.new(spec), "split-0", chunks)
    twice = expand_chunks(once, "split-0", chunks)
    assert [s.name for s in twice.spec.steps] == [s.name for s in once.spec.steps]


def test_a_retried_chunked_workflow_runs_only_the_failed_chunks_then_the_concat():
    spec = chunked_spec("file:///in.mp4", TranscodeParams.model_validate({"renditions": [{"height": 240}]}),
                        Chunking(), priority="normal")
    flow = Flow.new(spec)
    flow = flow.model_copy(update={"steps": flow.steps | {"split-0": flow.steps["split-0"].model_copy(
        update={"status": StepStatus.started, "job_id": "split"})}})
    chunks = [{"index": i, "start_s": i, "end_s": i + 1, "uri": f"file:///c{i}"} for i in range(3)]
    flow = on_job_end(flow, "split", JobStatus.succeeded, {}, {"chunks": chunks}).flow
    for i, status in enumerate((JobStatus.succeeded, JobStatus.failed, JobStatus.succeeded)):
        flow = flow.model_copy(update={"steps": flow.steps | {f"split-0.chunk-{i:04d}": flow.steps[
            f"split-0.chunk-{i:04d}"].model_copy(update={"status": StepStatus.started, "job_id": f"c{i}"})}})
        flow = on_job_end(flow, f"c{i}", status, {"encoded.mkv": f"file:///e{i}"} if status == JobStatus.succeeded
                          else {}).flow
    assert flow.steps["concat-0"].status == StepStatus.skipped
    kept = {name: flow.steps[name] for name in ("split-0", "split-0.chunk-0000", "split-0.chunk-0002")}
    advance = on_retry(flow)
    assert advance.start == ["split-0.chunk-0001"]
    assert {name: advance.flow.steps[name] for name in kept} == kept  # same jobs and outputs
    assert advance.flow.steps["split-0.chunk-0001"].previous_jobs == ["c1"]
    assert advance.flow.steps["concat-0"].status == StepStatus.pending


def test_a_renditions_thread_cap_reaches_the_single_pass_and_every_chunk():
    from renderfarm.core.params import Rendition
    from renderfarm.worker.workloads.cpu import transcode_command

    capped = transcode_command("/in.mp4", "/out.mp4", Rendition(height=240, threads=2), has_audio=True)
    assert capped[capped.index("-threads") + 1] == "2"
    assert "-threads" not in transcode_command("/in.mp4", "/out.mp4", Rendition(height=240), has_audio=True)
    renditions = [{"height": 240, "threads": 2}]
    inherited = chunked_spec("file:///in.mp4", TranscodeParams(renditions=renditions), Chunking(), priority="normal")
    assert inherited.step("split-0").each_chunk["threads"] == 2
    chunking_wins = chunked_spec("file:///in.mp4", TranscodeParams(renditions=renditions), Chunking(threads=1),
                                 priority="normal")
    assert chunking_wins.step("split-0").each_chunk["threads"] == 1


def test_a_source_with_audio_gets_an_audio_step_that_starts_first_and_feeds_the_concat():
    spec = chunked_spec("file:///in.mp4", params(), Chunking(), priority="high")
    flow = Flow.new(spec)
    flow = flow.model_copy(update={"steps": flow.steps | {"split-0": flow.steps["split-0"].model_copy(
        update={"status": StepStatus.started, "job_id": "j0"})}})
    chunks = [{"index": i, "start_s": i, "end_s": i + 1, "uri": f"file:///c{i}"} for i in range(2)]
    advance = on_job_end(flow, "j0", JobStatus.succeeded, {}, {"chunks": chunks, "has_audio": True})
    assert [n for n in advance.start if n.startswith(("concat-0", "split-0"))] == [
        "concat-0.audio", "split-0.chunk-0000", "split-0.chunk-0001"]
    audio = advance.flow.spec.step("concat-0.audio")
    assert (audio.kind, audio.input, audio.needs) == ("extract_audio", None, ["split-0"])
    assert audio.priority == spec.step("split-0").priority
    assert audio.params == {"format": "m4a", "bitrate_kbps": 128, "sample_rate": None, "channels": None}
    concat = advance.flow.spec.step("concat-0")
    assert concat.params["audio"] == {"from": "concat-0.audio", "output": "audio.m4a"}
    assert concat.needs == ["split-0", "concat-0.audio", "split-0.chunk-0000", "split-0.chunk-0001"]
    assert validate_spec(advance.flow.spec) == []
    again = expand_chunks(advance.flow, "split-0", chunks, has_audio=True)
    assert [s.name for s in again.spec.steps] == [s.name for s in advance.flow.spec.steps]

    silent = on_job_end(flow, "j0", JobStatus.succeeded, {}, {"chunks": chunks, "has_audio": False})
    assert "concat-0.audio" not in silent.start and "audio" not in silent.flow.spec.step("concat-0").params


def test_a_workflow_expanded_past_the_submit_limit_still_reads_back():
    """1,000 chunks of one split: the stored record must load again (it did not past 200 steps)."""
    from renderfarm.core.chunking import MAX_CHUNKS
    from renderfarm.core.workflows import MAX_STEPS

    spec = chunked_spec("file:///in.mp4", TranscodeParams.model_validate({"renditions": [{"height": 240}]}),
                        Chunking(max_chunks=MAX_CHUNKS), priority="normal")
    chunks = [{"index": i, "start_s": i, "end_s": i + 1, "uri": f"file:///c{i}"} for i in range(MAX_CHUNKS)]
    flow = expand_chunks(Flow.new(spec), "split-0", chunks, has_audio=True)
    assert len(flow.spec.steps) > MAX_STEPS
    assert Flow.model_validate_json(flow.model_dump_json()) == flow
    assert len(flow.spec.step("concat-0").needs) == MAX_CHUNKS + 2
    too_many = WorkflowSpec.model_validate({"input": "file:///in.mp4", "steps": [
        {"name": f"p{i}", "kind": "probe"} for i in range(MAX_STEPS + 1)]})
    assert [e["field"] for e in validate_spec(too_many)] == ["steps"]
