"""The one registry of job kinds. API, worker, docs and chart all read it."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from renderfarm.core import params
from renderfarm.core.queues import WorkloadClass
from renderfarm.core.retry import RetryPolicy


@dataclass(frozen=True)
class JobKind:
    name: str
    workload: WorkloadClass
    params_model: type[BaseModel]
    description: str
    soft_time_limit_s: int
    time_limit_s: int
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def task_name(self) -> str:
        return f"renderfarm.kind.{self.name}"


_KINDS: tuple[JobKind, ...] = (
    JobKind("probe", WorkloadClass.cpu, params.ProbeParams,
            "ffprobe summary: container, duration, streams.", 60, 90),
    JobKind("transcode", WorkloadClass.cpu, params.TranscodeParams,
            "One or more MP4 (H.264/HEVC + AAC) renditions by height, CRF or bitrate.", 3600, 3660),
    JobKind("thumbnail", WorkloadClass.cpu, params.ThumbnailParams,
            "Still images at given times or N evenly spaced; optional sprite sheet.", 600, 660),
    JobKind("extract_audio", WorkloadClass.cpu, params.ExtractAudioParams,
            "Audio track as 16 kHz mono WAV (the transcription input).", 1200, 1260),
    JobKind("transcribe", WorkloadClass.gpu_transcribe, params.TranscribeParams,
            "Speech to text with faster-whisper: JSON, SRT, VTT, TXT.", 7200, 7260),
    JobKind("vision", WorkloadClass.gpu_vision, params.VisionParams,
            "Shot boundaries with TransNetV2, a keyframe per shot, optional contact sheet.", 3600, 3660),
    JobKind("package_hls", WorkloadClass.cpu, params.PackageHlsParams,
            "HLS: an ABR ladder (never upscaled), fMP4 or TS segments, a master playlist.", 3600, 3660),
    JobKind("report", WorkloadClass.cpu, params.ReportParams,
            "Analysis report from probe, transcript and shots: self-contained HTML, PDF and JSON, "
            "with an extractive summary.", 600, 660),
    JobKind("chunk_split", WorkloadClass.cpu, params.ChunkSplitParams,
            "Chunked transcode, step 1: video cut on keyframes (or scene cuts) into chunks, stream copy.", 1800, 1860),
    JobKind("chunk_encode", WorkloadClass.cpu, params.ChunkEncodeParams,
            "Chunked transcode, step 2: one chunk encoded with the transcode rendition settings.", 3600, 3660),
    JobKind("chunk_concat", WorkloadClass.cpu, params.ChunkConcatParams,
            "Chunked transcode, step 3: chunks joined by stream copy, the source's audio muxed once; MP4.", 1800, 1860),
)

KINDS: dict[str, JobKind] = {kind.name: kind for kind in _KINDS}


def get_kind(name: str) -> JobKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown kind {name!r}; known kinds: {', '.join(KINDS)}") from None


def kinds_for(workload: WorkloadClass | str) -> list[JobKind]:
    return [kind for kind in KINDS.values() if kind.workload == WorkloadClass(workload)]


def longest_time_limit_s() -> int:
    return max(kind.time_limit_s for kind in KINDS.values())


# --- what each kind writes ------------------------------------------------------------
# Output names as a function of a kind's params, where the params decide them, so that a
# workflow's references to outputs are checked at submit. A kind missing here writes
# outputs that are only known once it ran (references to it are checked then).

def _transcode_outputs(p) -> frozenset[str]:
    return frozenset(f"{r.name}.mp4" for r in p.renditions)


def _thumbnail_outputs(p) -> frozenset[str] | None:
    if p.count is None and p.times is None:
        return None
    n = p.count if p.count is not None else len(p.times)
    names = {f"thumb-{i:04d}.{p.format}" for i in range(1, n + 1)}
    return frozenset(names | ({f"sprite.{p.format}"} if p.sprite else set()))


_OUTPUTS = {
    "probe": lambda p: frozenset({"probe.json"}),
    "transcode": _transcode_outputs,
    "thumbnail": _thumbnail_outputs,
    "extract_audio": lambda p: frozenset({f"audio.{p.format}"}),
    "transcribe": lambda p: frozenset(f"transcript.{fmt}" for fmt in p.formats),
    "report": lambda p: frozenset({"report.json", "report.html", "report.pdf"}),
    "chunk_encode": lambda p: frozenset({"encoded.mkv"}),
    "chunk_concat": lambda p: frozenset({f"{p.name}.mp4"}),
}


def output_names(kind: str, params: BaseModel) -> frozenset[str] | None:
    """The outputs a job of ``kind`` with ``params`` writes; None when only its run knows."""
    rule = _OUTPUTS.get(kind)
    return rule(params) if rule is not None else None
