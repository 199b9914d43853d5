"""The video-analysis template end to end: real cpu, gpu-transcribe and gpu-vision
worker processes (CPU models here, CUDA where present), a real redis-server and
ffmpeg, on a clip made here with hard cuts and espeak-ng speech. Each step's output
feeds the next; the transcript and the shot list match what the clip holds."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from renderfarm.api.app import create_app
from renderfarm.core.kinds import KINDS
from renderfarm.core.settings import Settings
from tests.support.media import ffprobe, make_cut_clip_with_speech
from tests.support.procs import ServiceProcess, start_worker, wait_for
from tests.support.speech import PARAGRAPH, synthesise
from tests.support.wer import word_error_rate

pytestmark = pytest.mark.gpu_models

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
# Three sentences (about 20 s of speech).
SENTENCE = ". ".join(PARAGRAPH.split(". ")[:3]) + "."
SOURCES = ["testsrc2", "smptebars", "mandelbrot", "rgbtestsrc"]
FRAMES_EACH = 125  # 5 s per shot at 25 fps: hard cuts at frames 125, 250, 375


@pytest.fixture
def workers(rf_settings_env):
    env = dict(rf_settings_env, HF_HUB_OFFLINE="1")
    started: list[ServiceProcess] = []
    try:
        for pool in ("cpu", "gpu-transcribe", "gpu-vision"):
            started.append(start_worker(env, pool=pool))
        yield started
    finally:
        for proc in started:
            proc.stop(signal.SIGTERM, 30)


def path_of(uri: str) -> Path:
    return Path(urlsplit(uri).path)


def test_video_analysis_runs_every_step_on_its_pool_and_passes_outputs_on(rf_settings_env, workers, data_dir):
    speech = synthesise(data_dir / "speech.wav", SENTENCE)
    clip = make_cut_clip_with_speech(data_dir / "inputs" / "talk.mp4", speech, sources=SOURCES,
                                     frames_each=FRAMES_EACH)
    with TestClient(create_app(Settings(api_keys=[KEY]))) as api:
        response = api.post("/v1/workflows", headers=AUTH, json={
            "template": "video-analysis", "input": clip.as_uri(), "params": {"height": 180, "thumbnails": 3}})
        assert response.status_code == 202, response.text
        workflow_id = response.json()["id"]
        try:
            flow = wait_for(lambda: (f := api.get(f"/v1/workflows/{workflow_id}", headers=AUTH).json())["status"]
                            in ("succeeded", "failed", "cancelled") and f, 600, interval=0.5, what="the workflow")
        except TimeoutError:
            pytest.fail("\n\n".join(w.log()[-3000:] for w in workers))
        steps = {step["name"]: step for step in flow["steps"]}
        assert flow["status"] == "succeeded", json.dumps(steps, indent=1)
        jobs = {name: api.get(f"/v1/jobs/{step['job_id']}", headers=AUTH).json() for name, step in steps.items()}

    assert {name: job["queue"] for name, job in jobs.items() if name != "report"} == {
        "probe": "cpu.normal", "transcode": "cpu.normal", "thumbnail": "cpu.normal", "extract_audio": "cpu.normal",
        "transcribe": "gpu-transcribe.normal", "vision": "gpu-vision.normal"}
    working = steps["transcode"]["outputs"]["180p.mp4"]
    assert jobs["vision"]["input"] == jobs["thumbnail"]["input"] == jobs["extract_audio"]["input"] == working
    assert jobs["transcribe"]["input"] == steps["extract_audio"]["outputs"]["audio.wav"]
    assert len(steps["thumbnail"]["outputs"]) == 3

    transcript = json.loads(path_of(steps["transcribe"]["outputs"]["transcript.json"]).read_text())
    text = " ".join(segment["text"] for segment in transcript["segments"])
    # Through two AAC encodes (the clip, the working rendition) and tiny.en: 0.16 measured
    # here. Another speech or none at all is near 1.0.
    assert word_error_rate(SENTENCE, text) < 0.25, text

    shots = json.loads(path_of(steps["vision"]["outputs"]["shots.json"]).read_text())["shots"]
    assert len(shots) == len(SOURCES)
    assert [shot["start_frame"] for shot in shots[1:]] == pytest.approx(
        [FRAMES_EACH * i for i in range(1, len(SOURCES))], abs=2)
    for shot in shots:  # a keyframe per shot, written by the vision step
        assert path_of(steps["vision"]["outputs"][shot["keyframe"]]).is_file()
    assert ffprobe(path_of(working))["streams"][0]["height"] == 180

    # The document export ends the workflow: its transcript, shot list and keyframes are
    # the ones the steps wrote, so they match the clip as checked above.
    assert "report" in KINDS and steps["report"]["status"] == "succeeded"
    assert {"report.json", "report.html", "report.pdf"} <= set(steps["report"]["outputs"])
    report = json.loads(path_of(steps["report"]["outputs"]["report.json"]).read_text())
    assert report["transcript"]["text"] == transcript["text"]
    assert word_error_rate(SENTENCE, report["transcript"]["text"]) < 0.25
    assert [s["start_frame"] for s in report["shots"]] == [s["start_frame"] for s in shots]
    assert [k["sha256"] for k in report["keyframes"]] == [
        hashlib.sha256(path_of(steps["vision"]["outputs"][s["keyframe"]]).read_bytes()).hexdigest() for s in shots]
    assert report["media"]["duration"] == pytest.approx(len(SOURCES) * FRAMES_EACH / 25, abs=0.2)
    assert report["summary"]["sentences"]
