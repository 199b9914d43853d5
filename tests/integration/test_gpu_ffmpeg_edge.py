"""The GPU pools' ffmpeg calls go through the one ffmpeg edge: input whitelists
(protocol and format) and kill-on-cancel, with real ffmpeg on real files and the
real models on CPU.

- A ``.mp4`` inside the allowed roots that is really an HLS playlist naming a file
  outside them is refused (InvalidMedia), as the CPU kinds refuse it.
- Cancelling a job whose ffmpeg is stalled (its input is a FIFO the test stops
  feeding) kills that ffmpeg and ends the job at once.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import pytest

from renderfarm.core.jobs import Job
from renderfarm.core.kinds import get_kind
from renderfarm.core.settings import Settings
from renderfarm.worker.context import JobContext
from renderfarm.worker.errors import InvalidMedia, JobCancelled
from renderfarm.worker.workloads import transcribe, vision
from tests.support.media import make_clip

pytestmark = pytest.mark.gpu_models

HANDLERS = {"transcribe": transcribe.transcribe, "vision": vision.vision}


@pytest.fixture(scope="module", autouse=True)
def offline_hub():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


def context(tmp_path: Path, kind: str, input_path: Path, is_cancelled=lambda: False) -> JobContext:
    settings = Settings(data_dir=tmp_path / "data", allowed_input_roots=[tmp_path / "data" / "inputs"])
    job = Job(id=f"{kind}-{time.monotonic_ns()}", kind=kind, input=input_path.as_uri(),
              queue=f"{get_kind(kind).workload.value}.normal", created_at=datetime.now(timezone.utc))
    work = tmp_path / "work" / job.id
    work.mkdir(parents=True)
    return JobContext(job=job, params=get_kind(kind).params_model(), settings=settings, input_path=input_path,
                      work_dir=work, output_dir=settings.outputs_dir / job.id, report=lambda *_: None,
                      is_cancelled=is_cancelled, _cancel_check_interval_s=0.0)


@pytest.mark.parametrize("kind", ["vision", "transcribe"])
def test_an_hls_playlist_disguised_as_mp4_naming_a_file_outside_the_roots_is_refused(tmp_path, kind):
    secret = make_clip(tmp_path / "outside" / "secret.ts", duration=2)  # not under the allowed roots
    inputs = tmp_path / "data" / "inputs"
    inputs.mkdir(parents=True)
    disguised = inputs / "holiday.mp4"
    disguised.write_text("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"
                         f"#EXTINF:2.0,\n{secret}\n#EXT-X-ENDLIST\n")
    ctx = context(tmp_path, kind, disguised)
    with pytest.raises(InvalidMedia):
        HANDLERS[kind](ctx)
    assert not ctx.output_dir.exists() or list(ctx.output_dir.iterdir()) == []


class StalledFeed:
    """A FIFO standing in for an input file: each time a reader opens it, the next
    payload is written; the last one is written and then the feed stalls (held open)."""

    def __init__(self, fifo: Path, payloads: list[bytes]):
        self.fifo = fifo
        os.mkfifo(fifo)
        self.payloads = payloads
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._feed, daemon=True)
        self.thread.start()

    def _feed(self) -> None:
        for n, payload in enumerate(self.payloads):
            try:
                with open(self.fifo, "wb") as writer:  # blocks until a reader opens it
                    writer.write(payload)
                    writer.flush()
                    if n == len(self.payloads) - 1:
                        self.release.wait(60)
            except BrokenPipeError:
                pass  # the reader took what it needed and closed

    def close(self) -> None:
        self.release.set()


def ffmpeg_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if p.name() == "ffmpeg"]


def run_until_ffmpeg_stalls_then_cancel(ctx_factory, handler) -> tuple[list[psutil.Process], dict]:
    cancelled = threading.Event()
    ctx = ctx_factory(cancelled.is_set)
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = handler(ctx)
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # the vision model loads first
    while not ffmpeg_children() and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    stalled = ffmpeg_children()
    assert stalled, f"ffmpeg never started: {outcome}"
    time.sleep(1.0)  # it has read what there is and waits for more
    assert all(p.is_running() for p in stalled)
    cancelled.set()
    thread.join(timeout=5)
    outcome["ended_after_cancel"] = not thread.is_alive()
    return stalled, outcome


def _cleanup(stalled: list[psutil.Process]) -> None:
    for proc in stalled:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_cancel_kills_a_stalled_transcribe_ffmpeg(tmp_path):
    audio = make_clip(tmp_path / "speech.mka", duration=6, video=False).read_bytes()
    fifo = tmp_path / "data" / "inputs" / "live.mka"
    fifo.parent.mkdir(parents=True)
    feed = StalledFeed(fifo, [audio[: len(audio) // 3]])
    stalled: list[psutil.Process] = []
    try:
        stalled, outcome = run_until_ffmpeg_stalls_then_cancel(
            lambda is_cancelled: context(tmp_path, "transcribe", fifo, is_cancelled), transcribe.transcribe)
        assert outcome["ended_after_cancel"], "the job went on waiting for its stalled ffmpeg after the cancel"
        assert isinstance(outcome.get("error"), JobCancelled), outcome
        assert all(_gone(proc) for proc in stalled)
    finally:
        feed.close()
        _cleanup(stalled)


def test_cancel_kills_a_stalled_vision_ffmpeg(tmp_path):
    clip = make_clip(tmp_path / "clip.mkv", duration=8, width=320, height=180, audio=False).read_bytes()
    fifo = tmp_path / "data" / "inputs" / "live.mkv"
    fifo.parent.mkdir(parents=True)
    # ffprobe reads the whole file once; then the frame decoder gets a third of it and waits.
    feed = StalledFeed(fifo, [clip, clip[: len(clip) // 3]])
    stalled: list[psutil.Process] = []
    try:
        stalled, outcome = run_until_ffmpeg_stalls_then_cancel(
            lambda is_cancelled: context(tmp_path, "vision", fifo, is_cancelled), vision.vision)
        assert outcome["ended_after_cancel"], "the job went on waiting for its stalled ffmpeg after the cancel"
        assert isinstance(outcome.get("error"), JobCancelled), outcome
        assert all(_gone(proc) for proc in stalled)
    finally:
        feed.close()
        _cleanup(stalled)
