"""Per-kind parameter models: what a client may send as ``params`` for each job kind."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from renderfarm.core.chunking import DEFAULT_MAX_CHUNKS, MAX_CHUNKS


class _Params(BaseModel):
    # Unknown fields are an error, not silently dropped: a typo must not run a job
    # with defaults the client did not ask for.
    model_config = ConfigDict(extra="forbid")


class ProbeParams(_Params):
    pass


class Rendition(_Params):
    name: str = Field(default="", pattern=r"^[A-Za-z0-9_-]{0,32}$", description="output name; default '<height>p'")
    video_codec: Literal["h264", "hevc"] = "h264"
    height: int = Field(ge=16, le=4320, description="output height in pixels (even); width keeps the aspect ratio")
    crf: int | None = Field(default=None, ge=0, le=51)
    video_bitrate_kbps: int | None = Field(default=None, ge=50, le=200_000)
    audio_bitrate_kbps: int = Field(default=128, ge=16, le=512)
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = "veryfast"
    # A pool running several encodes side by side caps each one; x264's own choice
    # (1.5 threads a core) also changes the output a little with the core count.
    threads: int = Field(default=0, ge=0, le=64, description="encoder threads; 0 = the encoder's choice, 1 = one core")

    @model_validator(mode="after")
    def _rate_control(self) -> "Rendition":
        if self.crf is not None and self.video_bitrate_kbps is not None:
            raise ValueError("give crf or video_bitrate_kbps, not both")
        if self.height % 2:
            raise ValueError("height must be even")
        if not self.name:
            self.name = f"{self.height}p"
        return self


class Chunking(_Params):
    """Chunked parallel transcode: the video is cut into ~chunk_duration_s chunks that
    encode side by side on the cpu pool (the job becomes a ``chunked-transcode`` workflow)."""

    chunk_duration_s: float = Field(default=30.0, ge=1.0, le=3600.0, description="target chunk length (cuts fall on keyframes)")
    split_on: Literal["keyframes", "scenes"] = Field(default="keyframes", description="scenes: cut on keyframes that "
                                                     "start a detected scene, where there are any")
    min_duration_s: float = Field(default=0.0, ge=0.0, le=1e6, description="a source shorter than this is one chunk")
    max_chunks: int = Field(default=DEFAULT_MAX_CHUNKS, ge=1, le=MAX_CHUNKS,
                            description="a longer source gets longer chunks, never more than this many")
    threads: int = Field(default=0, ge=0, le=64, description="encoder threads per chunk; 0 = the encoder's choice")


class TranscodeParams(_Params):
    renditions: list[Rendition] = Field(min_length=1, max_length=8)
    chunking: Chunking | Literal[False] | None = Field(
        default=None, description="encode in chunks in parallel (POST /v1/jobs answers with a workflow); false: "
        "single pass whatever the farm's setting; omitted: RF_CHUNKING_MIN_DURATION_S decides")

    @model_validator(mode="after")
    def _unique_names(self) -> "TranscodeParams":
        names = [r.name for r in self.renditions]
        if len(set(names)) != len(names):
            raise ValueError("rendition names must be unique")
        return self


class ThumbnailParams(_Params):
    times: list[float] | None = Field(default=None, min_length=1, max_length=200)
    count: int | None = Field(default=None, ge=1, le=200)
    width: int = Field(default=320, ge=16, le=3840)
    format: Literal["jpg", "png"] = "jpg"
    sprite: bool = False
    sprite_columns: int = Field(default=5, ge=1, le=20)

    @model_validator(mode="after")
    def _times_or_count(self) -> "ThumbnailParams":
        if self.times is not None and self.count is not None:
            raise ValueError("give times or count, not both")
        if self.times is None and self.count is None:
            self.count = 5
        if self.times is not None and any(t < 0 for t in self.times):
            raise ValueError("times must be >= 0")
        return self


class ExtractAudioParams(_Params):
    sample_rate: int | None = Field(default=16_000, ge=8_000, le=48_000, description="null: the source's")
    channels: Literal[1, 2] | None = Field(default=1, description="null: the source's")
    format: Literal["wav", "flac", "m4a"] = Field(default="wav", description="m4a: AAC at bitrate_kbps, as transcode "
                                                  "encodes audio")
    bitrate_kbps: int = Field(default=128, ge=16, le=512, description="m4a only")


class TranscribeParams(_Params):
    language: str | None = Field(default=None, pattern=r"^[a-z]{2,3}$",
                                 description="language code (en, fr, ...); omitted: detected from the audio "
                                             "(English-only models always use en)")
    beam_size: int = Field(default=5, ge=1, le=10)
    vad_filter: bool = Field(default=False, description="skip non-speech found by the Silero VAD")
    word_timestamps: bool = Field(default=True, description="per-word start/end/probability in transcript.json")
    batched: bool = Field(default=False, description="decode speech chunks side by side (BatchedInferencePipeline); "
                                                     "the chunks come from the VAD, so this implies vad_filter")
    batch_size: int = Field(default=8, ge=1, le=64, description="chunks per batch when batched")
    formats: list[Literal["json", "srt", "vtt", "txt"]] = Field(default_factory=lambda: ["json", "srt", "vtt", "txt"], min_length=1)


class VisionParams(_Params):
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0, description="shot-boundary score threshold")
    keyframes: bool = True
    contact_sheet: bool = False
    batch_windows: int | None = Field(
        default=None, ge=1, le=256,
        description="100-frame windows per forward pass; default: chosen for the device (16 on a GPU, 1 on the CPU)")


# --- HLS packaging ----------------------------------------------------------------------


class HlsRendition(_Params):
    name: str = Field(default="", pattern=r"^[A-Za-z0-9_-]{0,32}$", description="variant name; default '<height>p'")
    height: int = Field(ge=16, le=4320, description="output height in pixels (even); never above the source's")
    video_bitrate_kbps: int = Field(ge=50, le=200_000, description="average video bitrate, also the cap (maxrate)")
    audio_bitrate_kbps: int = Field(default=128, ge=16, le=512)

    @model_validator(mode="after")
    def _even_and_named(self) -> "HlsRendition":
        if self.height % 2:
            raise ValueError("height must be even")
        if not self.name:
            self.name = f"{self.height}p"
        return self


def default_hls_ladder() -> list[HlsRendition]:
    """A common H.264 ladder (Apple's authoring guide, rounded); rungs above the source are dropped."""
    return [
        HlsRendition(height=1080, video_bitrate_kbps=5000, audio_bitrate_kbps=128),
        HlsRendition(height=720, video_bitrate_kbps=2800, audio_bitrate_kbps=128),
        HlsRendition(height=480, video_bitrate_kbps=1400, audio_bitrate_kbps=96),
        HlsRendition(height=360, video_bitrate_kbps=800, audio_bitrate_kbps=96),
        HlsRendition(height=240, video_bitrate_kbps=400, audio_bitrate_kbps=64),
    ]


class PackageHlsParams(_Params):
    renditions: list[HlsRendition] = Field(default_factory=default_hls_ladder, min_length=1, max_length=8)
    segment_type: Literal["fmp4", "mpegts"] = Field(default="fmp4", description="fMP4 (CMAF) or MPEG-TS segments")
    segment_duration_s: int = Field(default=4, ge=1, le=30, description="target segment length; keyframes are forced there")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = "veryfast"

    @model_validator(mode="after")
    def _unique_names(self) -> "PackageHlsParams":
        names = [r.name for r in self.renditions]
        if len(set(names)) != len(names):
            raise ValueError("rendition names must be unique")
        return self


# --- the analysis report ---------------------------------------------------------------



class ReportParams(_Params):
    probe: str | None = Field(default=None, min_length=1, max_length=4096,
                              description="media reference to a probe job's probe.json; omitted: the input is probed")
    transcript: str | None = Field(default=None, min_length=1, max_length=4096,
                                   description="media reference to a transcribe job's transcript.json")
    shots: str | None = Field(default=None, min_length=1, max_length=4096,
                              description="media reference to a vision job's shots.json (its keyframes are read beside it)")
    title: str = Field(default="", max_length=200, description="default: the input's file name")
    summary_sentences: int = Field(default=5, ge=1, le=50, description="sentences in the extractive summary")
    max_keyframes: int = Field(default=60, ge=0, le=500, description="keyframes embedded (evenly sampled beyond this)")


# --- chunked transcode ----------------------------------------------------------------


class ChunkSplitParams(_Params):
    chunk_duration_s: float = Field(default=30.0, ge=1.0, le=3600.0, description="target chunk length (cuts fall on keyframes)")
    split_on: Literal["keyframes", "scenes"] = Field(
        default="keyframes", description="scenes: cut only on keyframes that start a detected scene, where there are any")
    scene_threshold: float = Field(default=0.3, gt=0.0, lt=1.0, description="ffmpeg scene score that counts as a cut")
    min_duration_s: float = Field(default=0.0, ge=0.0, le=1e6, description="a source shorter than this is one chunk (automatic "
                                                                   "chunking: only the split knows the duration)")
    max_chunks: int = Field(default=DEFAULT_MAX_CHUNKS, ge=1, le=MAX_CHUNKS,
                            description="a longer source gets longer chunks, never more than this many")


class ChunkEncodeParams(Rendition):
    """The transcode rendition settings, for one chunk (video only; audio is muxed once by chunk_concat)."""


class ChunkConcatParams(_Params):
    chunks: list[str] = Field(min_length=1, max_length=10_000,
                              description="media references to the encoded chunks, in playback order")
    name: str = Field(default="video", pattern=r"^[A-Za-z0-9_-]{1,32}$", description="output is <name>.mp4")
    audio_bitrate_kbps: int = Field(default=128, ge=16, le=512)
    audio: str | None = Field(default=None, max_length=4096, description="media reference to the audio, already "
                              "encoded (extract_audio to m4a), muxed as it is; omitted: the input's audio is "
                              "encoded here")

    @model_validator(mode="after")
    def _references(self) -> "ChunkConcatParams":
        if any(not ref or len(ref) > 4096 for ref in self.chunks):
            raise ValueError("every chunk reference must be 1 to 4096 characters")
        return self
