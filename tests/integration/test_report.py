"""The report kind on what real probe, transcribe and vision jobs wrote: a clip with
espeak-ng speech and hard cuts goes through a cpu worker (probe, report), a
gpu-transcribe worker and a gpu-vision worker (real models), each an ordinary job;
the report's JSON, HTML and PDF are then checked against those outputs."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import signal

import pytest
from pypdf import PdfReader

from renderfarm.core.jobs import JobStatus
from renderfarm.worker.workloads.summary import split_sentences
from tests.support.farm import open_store, output_path, run_job
from tests.support.media import make_speech_cut_clip
from tests.support.procs import start_worker
from tests.support.speech import synthesise

pytestmark = pytest.mark.gpu_models

SPEECH = ("The old lighthouse stood at the edge of the cliff for more than a century. Every evening the keeper "
          "climbed the narrow stairs to light the lamp. He said that a light in the dark was a simple promise.")
MODEL_JOB_TIMEOUT_S = 300  # a fresh worker process loads torch and the model on a busy two-core machine


@pytest.fixture
def workers():
    started = []
    yield started
    for worker in started:
        worker.stop(signal.SIGTERM, 30)


def test_report_reads_what_probe_transcribe_and_vision_wrote(rf_settings_env, data_dir, workers):
    store = open_store()
    speech = synthesise(data_dir / "speech.wav", SPEECH)
    clip, cuts = make_speech_cut_clip(data_dir / "inputs" / "talk.mp4", speech, shots=3)
    env = dict(rf_settings_env, HF_HUB_OFFLINE="1")

    cpu = start_worker(env, pool="cpu")
    workers.append(cpu)
    probed = run_job(store, cpu, "probe", clip)
    for pool, kind, params in (("gpu-transcribe", "transcribe", {"formats": ["json"]}), ("gpu-vision", "vision", {})):
        worker = start_worker(env, pool=pool)
        workers.append(worker)
        done = run_job(store, worker, kind, clip, params, timeout=MODEL_JOB_TIMEOUT_S)
        if kind == "transcribe":
            transcribed = done
        else:
            seen = done
        worker.stop(signal.SIGTERM, 30)  # one model in memory at a time

    transcript = json.loads(output_path(transcribed, "transcript.json").read_text())
    shots = json.loads(output_path(seen, "shots.json").read_text())
    assert "lighthouse" in transcript["text"].lower()
    assert [s["start_frame"] for s in shots["shots"]][1:] == pytest.approx(cuts, abs=2)

    uri = {job.kind: next(o.uri for o in job.result.outputs if o.name.endswith(".json"))
           for job in (probed, transcribed, seen)}
    done = run_job(store, cpu, "report", clip,
                   {"probe": uri["probe"], "transcript": uri["transcribe"], "shots": uri["vision"], "title": "Talk"})
    assert [o.name for o in done.result.outputs] == ["report.json", "report.html", "report.pdf"]
    report = json.loads(output_path(done, "report.json").read_text())

    # The transcript and shot list are the ones the steps wrote, not a re-derivation.
    assert report["transcript"]["text"] == transcript["text"]
    assert [s["text"] for s in report["transcript"]["segments"]] == [s["text"] for s in transcript["segments"]]
    assert [(s["index"], s["start_frame"], s["end_frame"], s["keyframe"]) for s in report["shots"]] == [
        (s["index"], s["start_frame"], s["end_frame"], s["keyframe"]) for s in shots["shots"]]
    assert report["media"] == probed.result.metadata
    sentences = split_sentences(transcript["text"])
    assert report["summary"]["sentences"] and all(s in sentences for s in report["summary"]["sentences"])

    # Keyframes: exactly the vision job's images, byte for byte.
    keyframe_bytes = {s["keyframe"]: output_path(seen, s["keyframe"]).read_bytes() for s in shots["shots"]}
    assert len(keyframe_bytes) == 3
    assert [(k["shot"], k["name"], k["sha256"]) for k in report["keyframes"]] == [
        (s["index"], s["keyframe"], hashlib.sha256(keyframe_bytes[s["keyframe"]]).hexdigest()) for s in shots["shots"]]

    page = output_path(done, "report.html").read_text()
    inline = [base64.b64decode(src.split(",", 1)[1]) for src in re.findall(r'<img src="(data:image/jpeg;base64,[^"]+)"', page)]
    assert inline == list(keyframe_bytes.values())
    assert not re.search(r'(src|href)="(?!data:)', page), "the HTML must not reference anything outside itself"

    pdf = PdfReader(io.BytesIO(output_path(done, "report.pdf").read_bytes()))
    text = " ".join(p.extract_text() for p in pdf.pages)
    assert len(pdf.pages) > 0 and "lighthouse" in text.lower() and "Shot 3" in text
    assert sum(len(p.images) for p in pdf.pages) == 3


def test_report_refuses_references_outside_the_farm(rf_settings_env, data_dir, workers):
    """A params reference is read under the same rules as an input: a file outside the
    allowed roots and the outputs folder fails the job as invalid input."""
    store = open_store()
    outside = data_dir.parent / "outside" / "transcript.json"
    outside.parent.mkdir(parents=True, exist_ok=True)
    outside.write_text(json.dumps({"text": "secret", "segments": []}))
    clip, _ = make_speech_cut_clip(data_dir / "inputs" / "talk.mp4", synthesise(data_dir / "s.wav", "Hello there."), shots=1)
    cpu = start_worker(rf_settings_env, pool="cpu")
    workers.append(cpu)
    done = run_job(store, cpu, "report", clip, {"transcript": outside.as_uri()}, expect=JobStatus.failed)
    assert done.error.type == "invalid_input" and "outside" in done.error.message
    assert done.result is None
