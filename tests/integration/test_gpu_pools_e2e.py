"""A transcribe job and a vision job through real worker processes of the GPU pools
(``python -m renderfarm.worker --pool gpu-transcribe|gpu-vision``), a real
redis-server, real ffmpeg and the real models: submitted to the job store, taken
from the pool's priority queue, run by the warm model, published, succeeded."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from renderfarm.core.jobs import JobStatus
from renderfarm.core.kinds import get_kind
from renderfarm.core.queues import Priority
from renderfarm.core.redis_conn import redis_client as make_redis
from renderfarm.core.settings import Settings
from renderfarm.core.store import JobStore
from renderfarm.core.submit import job_message, new_job
from tests.support.procs import ServiceProcess, start_worker, wait_for
from tests.support.wer import word_error_rate

pytestmark = pytest.mark.gpu_models

TERMINAL = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
SENTENCE = ("He never complained about the work. He said that a light in the dark was a simple promise, "
            "and that keeping a promise was the most important thing a person could do.")
# Loading a model in a fresh worker process on a busy two-core machine (torch import included).
JOB_TIMEOUT_S = 240


@pytest.fixture
def store(rf_settings_env):
    settings = Settings()
    return JobStore(make_redis(settings, socket_timeout_s=5), retention_seconds=settings.retention_seconds)


@pytest.fixture
def workers():
    started: list[ServiceProcess] = []
    yield started
    for proc in started:
        proc.stop(signal.SIGTERM, 30)


@pytest.fixture
def gpu_env(rf_settings_env):
    return dict(rf_settings_env, HF_HUB_OFFLINE="1")


def submit(store: JobStore, kind_name: str, path: Path, params: dict):
    kind = get_kind(kind_name)
    params = kind.params_model.model_validate(params).model_dump(mode="json")
    job = new_job(kind, input=path.as_uri(), params=params, priority=Priority.high)
    stored, created = store.submit(job, job_message(kind, job))
    assert created and stored.queue == f"{kind.workload.value}.high"
    return stored


def wait_done(store: JobStore, job_id: str, worker: ServiceProcess):
    try:
        return wait_for(lambda: (job := store.get(job_id)).status in TERMINAL and job, JOB_TIMEOUT_S,
                        interval=0.2, what=f"job {job_id} to finish")
    except TimeoutError:
        pytest.fail(f"job {job_id} did not finish: {store.get(job_id)}\nworker log:\n{worker.log()[-4000:]}")


def output_path(uri: str) -> Path:
    return Path(urlsplit(uri).path)


def disguised_playlist(data_dir: Path) -> Path:
    """A .mp4 inside the allowed roots that is an HLS playlist naming a file outside them."""
    secret = data_dir.parent / "outside" / "secret.ts"
    secret.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=160x90:rate=25:duration=2", "-f", "lavfi", "-i", "sine=duration=2",
                    "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(secret)], check=True)
    disguised = data_dir / "inputs" / "disguised.mp4"
    disguised.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{secret}\n#EXT-X-ENDLIST\n")
    return disguised


def assert_refused(store: JobStore, worker: ServiceProcess, kind_name: str, data_dir: Path) -> None:
    job = submit(store, kind_name, disguised_playlist(data_dir), {})
    done = wait_done(store, job.id, worker)
    assert done.status == JobStatus.failed and done.error.type == "invalid_media", done
    assert done.result is None


def test_a_vision_job_runs_on_a_gpu_vision_worker(store, gpu_env, workers, data_dir):
    clip = data_dir / "inputs" / "two-shots.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25", "-f", "lavfi", "-i", "smptebars=size=160x90:rate=25",
         "-filter_complex", "[0:v]trim=end_frame=40,setpts=PTS-STARTPTS[a];[1:v]trim=end_frame=35,setpts=PTS-STARTPTS[b];"
                            "[a][b]concat=n=2:v=1:a=0[out]",
         "-map", "[out]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(clip)],
        check=True,
    )
    worker = start_worker(gpu_env, pool="gpu-vision")
    workers.append(worker)
    job = submit(store, "vision", clip, {"contact_sheet": True})

    done = wait_done(store, job.id, worker)
    assert done.status == JobStatus.succeeded, f"{done.error}\n{worker.log()[-3000:]}"
    assert done.progress == 100 and done.attempts == 1
    names = [o.name for o in done.result.outputs]
    assert names == ["shots.json", "keyframe-0001.jpg", "keyframe-0002.jpg", "contact-sheet.jpg"]
    for output in done.result.outputs:
        path = output_path(output.uri)
        assert path.is_file() and path.stat().st_size == output.size_bytes
        assert path.parent == data_dir.resolve() / "outputs" / job.id
    shots = json.loads(output_path(done.result.outputs[0].uri).read_text())["shots"]
    assert [s["start_frame"] for s in shots][1:] and abs(shots[1]["start_frame"] - 40) <= 2
    assert done.result.metadata["shots"] == 2 and done.result.metadata["frames"] == 75
    assert_refused(store, worker, "vision", data_dir)


def test_a_transcribe_job_runs_on_a_gpu_transcribe_worker(store, gpu_env, workers, data_dir):
    speech = data_dir / "inputs" / "sentence.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(speech), SENTENCE], check=True)
    worker = start_worker(gpu_env, pool="gpu-transcribe")
    workers.append(worker)
    jobs = [submit(store, "transcribe", speech, {"formats": ["json", "srt"]}) for _ in range(2)]

    for job in jobs:
        done = wait_done(store, job.id, worker)
        assert done.status == JobStatus.succeeded, f"{done.error}\n{worker.log()[-3000:]}"
        assert done.progress == 100
        assert [o.name for o in done.result.outputs] == ["transcript.json", "transcript.srt"]
        document = json.loads(output_path(done.result.outputs[0].uri).read_text())
        assert word_error_rate(SENTENCE, document["text"]) <= 0.15, document["text"]
        assert done.result.metadata["device"] in ("cpu", "cuda")
    # Both jobs ran in the same warm process: the model was loaded once.
    assert worker.log().count("whisper model") == 1, worker.log()[-3000:]
    assert_refused(store, worker, "transcribe", data_dir)
