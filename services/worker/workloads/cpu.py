"""CPU pool workloads: ffmpeg probe, transcode, thumbnail, extract_audio.

Command building and media arithmetic (durations, thumbnail times, tile sizes)
are plain functions; the handlers only run them through ``ffmpeg_exec`` and
publish what they wrote (temporary name, then an atomic rename).
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator

import ffmpeg

from renderfarm.core.jobs import JobResult
from renderfarm.core.params import ExtractAudioParams, Rendition, ThumbnailParams, TranscodeParams
from renderfarm.worker.context import JobContext
from renderfarm.worker.errors import InvalidMedia
from renderfarm.worker.ffmpeg_exec import compile_command, file_url, input_kwargs, probe, run_ffmpeg

DEFAULT_CRF = 23

_VIDEO_ENCODERS = {"h264": "libx264", "hevc": "libx265"}
_IMAGE_ENCODERS = {"jpg": "mjpeg", "png": "png"}
_MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "wav": "audio/wav", "flac": "audio/flac", "mp4": "video/mp4",
                "m4a": "audio/mp4"}
_AUDIO_CODECS = {"wav": "pcm_s16le", "flac": "flac", "m4a": "aac"}


# --- reading ffprobe output (pure) -----------------------------------------------------


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _rate(value: Any) -> float | None:
    """ffprobe frame rates are fractions ("30000/1001"); "0/0" means unknown."""
    try:
        rate = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None
    return round(float(rate), 3) if rate > 0 else None


def video_streams(info: dict) -> list[dict]:
    """Real video streams: cover art (an attached picture) is not video."""
    return [
        s for s in info.get("streams", [])
        if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")
    ]


def audio_streams(info: dict) -> list[dict]:
    return [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]


def media_duration(info: dict, stream: dict | None = None) -> float | None:
    """The stream's duration where the container records it, else the container's."""
    if stream is not None:
        duration = _float(stream.get("duration"))
        if duration and duration > 0:
            return duration
    duration = _float(info.get("format", {}).get("duration"))
    return duration if duration and duration > 0 else None


def stream_fps(stream: dict) -> float | None:
    return _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate"))


def media_summary(info: dict) -> dict:
    """What a probe job reports: container and per-stream facts, as plain JSON."""
    fmt = info.get("format", {})
    streams = []
    for s in info.get("streams", []):
        kind = s.get("codec_type", "unknown")
        entry: dict[str, Any] = {
            "index": s.get("index"),
            "type": kind,
            "codec": s.get("codec_name"),
            "duration": _float(s.get("duration")),
            "bit_rate": _int(s.get("bit_rate")),
        }
        if kind == "video":
            entry |= {
                "width": s.get("width"),
                "height": s.get("height"),
                "fps": stream_fps(s),
                "pix_fmt": s.get("pix_fmt"),
                "attached_pic": bool((s.get("disposition") or {}).get("attached_pic")),
            }
        elif kind == "audio":
            entry |= {
                "sample_rate": _int(s.get("sample_rate")),
                "channels": s.get("channels"),
                "channel_layout": s.get("channel_layout"),
            }
        streams.append(entry)
    return {
        "format_name": fmt.get("format_name"),
        "duration": _float(fmt.get("duration")),
        "size": _int(fmt.get("size")),
        "bit_rate": _int(fmt.get("bit_rate")),
        "streams": streams,
    }


# --- commands (pure) -------------------------------------------------------------------


def transcode_command(input_path: Path | str, output_path: Path | str, rendition: Rendition, has_audio: bool) -> list[str]:
    """The exact ffmpeg argv for one rendition (the handler runs this; so can a benchmark).

    MP4 with the index up front, the first real video stream scaled to the
    rendition height (width keeps the aspect ratio, rounded to even), yuv420p for
    players, CRF or capped bitrate, and AAC from the first audio stream if any.
    """
    source = ffmpeg.input(file_url(input_path), **input_kwargs())
    video = source["V:0"].filter("scale", -2, rendition.height)
    streams = [video, source["a:0"]] if has_audio else [video]
    options: dict[str, Any] = {
        "format": "mp4",
        "c:v": _VIDEO_ENCODERS[rendition.video_codec],
        "preset": rendition.preset,
        "pix_fmt": "yuv420p",
        "movflags": "+faststart",
        # Sparse or late streams otherwise fail with "Too many packets buffered".
        "max_muxing_queue_size": 1024,
    }
    if rendition.video_bitrate_kbps is not None:
        kbps = rendition.video_bitrate_kbps
        options |= {"b:v": f"{kbps}k", "maxrate": f"{kbps}k", "bufsize": f"{2 * kbps}k"}
    else:
        options["crf"] = rendition.crf if rendition.crf is not None else DEFAULT_CRF
    if rendition.threads:
        options["threads"] = rendition.threads
    if rendition.video_codec == "hevc":
        # hvc1 is the tag Apple players require; x265 logs to stderr on its own otherwise.
        options |= {"tag:v": "hvc1", "x265-params": "log-level=error"}
    if has_audio:
        options |= {"c:a": "aac", "b:a": f"{rendition.audio_bitrate_kbps}k"}
    return compile_command(ffmpeg.output(*streams, file_url(output_path), **options))


def thumbnail_command(input_path: Path | str, output_path: Path | str, time_s: float, width: int, image_format: str) -> list[str]:
    # -ss before -i: a fast seek, then decoding up to the exact time.
    source = ffmpeg.input(file_url(input_path), ss=f"{time_s:.3f}", **input_kwargs())
    frame = source["V:0"].filter("scale", width, -2)
    options: dict[str, Any] = {"format": "image2", "frames:v": 1, "c:v": _IMAGE_ENCODERS[image_format]}
    if image_format == "jpg":
        options["q:v"] = 2
    return compile_command(ffmpeg.output(frame, file_url(output_path), **options))


def sprite_command(pattern: Path | str, output_path: Path | str, count: int, columns: int, image_format: str) -> list[str]:
    """A sheet of ``count`` images named by the %04d ``pattern`` (files this worker wrote)."""
    columns, rows = sprite_grid(count, columns)
    source = ffmpeg.input(file_url(pattern), format="image2", framerate=1, start_number=1, **input_kwargs(trusted=True))
    sheet = source.filter("tile", f"{columns}x{rows}")
    options: dict[str, Any] = {"format": "image2", "frames:v": 1, "c:v": _IMAGE_ENCODERS[image_format]}
    if image_format == "jpg":
        options["q:v"] = 3
    return compile_command(ffmpeg.output(sheet, file_url(output_path), **options))


def extract_audio_command(input_path: Path | str, output_path: Path | str, sample_rate: int | None, channels: int | None,
                          audio_format: str, bitrate_kbps: int = 128) -> list[str]:
    source = ffmpeg.input(file_url(input_path), **input_kwargs())
    options: dict[str, Any] = {"format": "mp4" if audio_format == "m4a" else audio_format,
                               "c:a": _AUDIO_CODECS[audio_format]}
    if sample_rate:
        options["ar"] = sample_rate
    if channels:
        options["ac"] = channels
    if audio_format == "m4a":
        options |= {"b:a": f"{bitrate_kbps}k", "movflags": "+faststart"}
    return compile_command(ffmpeg.output(source["a:0"], file_url(output_path), **options))


# --- thumbnail arithmetic (pure) -------------------------------------------------------


def evenly_spaced_times(duration_s: float, count: int) -> list[float]:
    """The middle of each of ``count`` equal slices: spread over the whole input,
    never the very first frame (often black) nor the very end (no frame there)."""
    return [round(duration_s * (index + 0.5) / count, 3) for index in range(count)]


def last_seekable_time(duration_s: float, fps: float | None) -> float:
    """A seek to the container's end finds no frame: the last frame starts one frame
    duration earlier. Half a frame more keeps rounding on the safe side."""
    frame_s = 1.0 / fps if fps else 0.04
    return max(0.0, duration_s - 1.5 * frame_s)


def sprite_grid(count: int, columns: int) -> tuple[int, int]:
    columns = max(1, min(columns, count))
    return columns, math.ceil(count / columns)


# --- handlers --------------------------------------------------------------------------


def _probe_input(ctx: JobContext) -> dict:
    if not ctx.input_path.is_file():
        raise InvalidMedia(f"input file {ctx.input_path.name!r} is missing")
    return probe(ctx.input_path, should_stop=ctx.is_cancelled)


def _require_video(info: dict) -> dict:
    streams = video_streams(info)
    if not streams:
        raise InvalidMedia("input has no video stream")
    return streams[0]


@contextlib.contextmanager
def _temporary(ctx: JobContext, name: str) -> Iterator[Path]:
    """A temporary output path that is removed if anything fails before publishing."""
    temp = ctx.temp_output(name)
    try:
        yield temp
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def probe_media(ctx: JobContext) -> JobResult:
    ctx.progress(0, "probe", "")
    summary = media_summary(_probe_input(ctx))
    if not summary["streams"]:
        raise InvalidMedia("input has no audio or video streams")
    # Also published as probe.json: a later step (the report) takes it as a media reference.
    temp = ctx.temp_output("probe.json")
    temp.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    output = ctx.publish(temp, "probe.json", "application/json")
    ctx.progress(100, "probe", "")
    return JobResult(outputs=[output], metadata=summary)


def written_rendition(path: Path) -> dict:
    """What a rendition we just wrote holds, read in-process (PyAV, ~3 ms) rather than
    by another ffprobe (~80 ms): the file is our own output, so no input rules apply."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise RuntimeError(f"{path.name}: ffmpeg wrote no video stream")
            video = container.streams.video[0].codec_context
            return {
                "video_codec": video.name,
                "width": video.width,
                "height": video.height,
                "duration": round(container.duration / 1_000_000, 3) if container.duration else None,
                "bit_rate": container.bit_rate or None,
                "has_audio": bool(container.streams.audio),
            }
    except av.FFmpegError as exc:
        raise RuntimeError(f"{path.name}: ffmpeg wrote an unreadable file: {exc}") from None


def transcode(ctx: JobContext) -> JobResult:
    params: TranscodeParams = ctx.params  # type: ignore[assignment]
    info = _probe_input(ctx)
    video = _require_video(info)
    has_audio = bool(audio_streams(info))
    duration = media_duration(info)
    total = len(params.renditions)
    outputs, renditions = [], []
    for position, rendition in enumerate(params.renditions):
        name = f"{rendition.name}.mp4"
        stage = f"transcode {rendition.name}"
        message = f"rendition {position + 1} of {total}"
        ctx.progress(100.0 * position / total, stage, message)

        def report(percent: float, position: int = position, stage: str = stage, message: str = message) -> None:
            ctx.progress(100.0 * (position + percent / 100.0) / total, stage, message)

        with _temporary(ctx, name) as temp:
            run_ffmpeg(transcode_command(ctx.input_path, temp, rendition, has_audio),
                       duration_s=duration, on_progress=report, what=f"transcode {rendition.name}",
                       should_stop=ctx.is_cancelled)
            written = written_rendition(temp)
            output = ctx.publish(temp, name, _MEDIA_TYPES["mp4"])
        outputs.append(output)
        renditions.append({"name": rendition.name, "output": name, **written, "size": output.size_bytes})
    ctx.progress(100, "transcode", "done")
    return JobResult(outputs=outputs, metadata={
        "input": {"duration": duration, "width": video.get("width"), "height": video.get("height"), "has_audio": has_audio},
        "renditions": renditions,
    })


def _extract_frame(ctx: JobContext, target: Path, time_s: float, seek_limit: float, params: ThumbnailParams) -> float:
    """Write the frame at ``time_s``; returns the time actually used. Near the end a
    seek can land after the last frame (ffmpeg then writes nothing and exits 0), so
    earlier times are tried before giving up."""
    first = min(time_s, seek_limit)
    for attempt in dict.fromkeys([first, max(0.0, first - 0.5), max(0.0, first - 2.0), 0.0]):
        run_ffmpeg(thumbnail_command(ctx.input_path, target, attempt, params.width, params.format),
                   what=f"thumbnail at {time_s:.3f} s", should_stop=ctx.is_cancelled)
        if target.is_file() and target.stat().st_size > 0:
            return attempt
    raise InvalidMedia(f"no video frame could be decoded at {time_s:.3f} s")


def thumbnail(ctx: JobContext) -> JobResult:
    params: ThumbnailParams = ctx.params  # type: ignore[assignment]
    info = _probe_input(ctx)
    video = _require_video(info)
    duration = media_duration(info, video)
    if params.times is not None:
        times = [float(t) for t in params.times]
    else:
        if duration is None:
            raise InvalidMedia("input duration is unknown; give explicit thumbnail times")
        times = evenly_spaced_times(duration, params.count or 1)
    if duration is not None:
        beyond = [t for t in times if t >= duration]
        if beyond:
            listed = ", ".join(f"{t:g}" for t in beyond[:10])
            raise InvalidMedia(f"thumbnail times beyond the end of the input ({duration:.3f} s): {listed}")
    seek_limit = last_seekable_time(duration, stream_fps(video)) if duration is not None else math.inf

    ext = params.format
    steps = len(times) + (1 if params.sprite else 0)
    frames_dir = ctx.work_dir / "thumbnails"
    frames_dir.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, Path]] = []
    used_times: list[float] = []
    for number, time_s in enumerate(times, start=1):
        ctx.progress(100.0 * (number - 1) / steps, "thumbnail", f"frame {number} of {len(times)}")
        name = f"thumb-{number:04d}.{ext}"
        used_times.append(_extract_frame(ctx, frames_dir / name, time_s, seek_limit, params))
        made.append((name, frames_dir / name))

    sprite_meta = None
    if params.sprite:
        ctx.progress(100.0 * len(times) / steps, "sprite", "")
        name = f"sprite.{ext}"
        run_ffmpeg(sprite_command(frames_dir / f"thumb-%04d.{ext}", frames_dir / name, len(times), params.sprite_columns, ext),
                   what="sprite sheet", should_stop=ctx.is_cancelled)
        columns, rows = sprite_grid(len(times), params.sprite_columns)
        sprite_meta = {"name": name, "columns": columns, "rows": rows}
        made.append((name, frames_dir / name))

    outputs = []
    for name, path in made:
        ctx.raise_if_cancelled()
        with _temporary(ctx, name) as temp:
            shutil.move(path, temp)
            outputs.append(ctx.publish(temp, name, _MEDIA_TYPES[ext]))
    ctx.progress(100, "thumbnail", "done")
    return JobResult(outputs=outputs, metadata={
        "times": times,
        "seek_times": used_times,
        "width": params.width,
        "format": ext,
        "sprite": sprite_meta,
    })


def extract_audio(ctx: JobContext) -> JobResult:
    params: ExtractAudioParams = ctx.params  # type: ignore[assignment]
    info = _probe_input(ctx)
    streams = audio_streams(info)
    if not streams:
        raise InvalidMedia("input has no audio stream")
    duration = media_duration(info, streams[0])
    name = f"audio.{params.format}"
    ctx.progress(0, "extract_audio", "")
    with _temporary(ctx, name) as temp:
        run_ffmpeg(extract_audio_command(ctx.input_path, temp, params.sample_rate, params.channels, params.format,
                                         params.bitrate_kbps),
                   duration_s=duration, on_progress=lambda percent: ctx.progress(percent, "extract_audio", ""),
                   what="extract audio", should_stop=ctx.is_cancelled)
        output = ctx.publish(temp, name, _MEDIA_TYPES[params.format])
    ctx.progress(100, "extract_audio", "done")
    return JobResult(outputs=[output], metadata={
        "sample_rate": params.sample_rate or _int(streams[0].get("sample_rate")),
        "channels": params.channels or _int(streams[0].get("channels")),
        "format": params.format,
        "codec": _AUDIO_CODECS[params.format],
        "duration": duration,
        "size": output.size_bytes,
    })


HANDLERS = {
    "probe": probe_media,
    "transcode": transcode,
    "thumbnail": thumbnail,
    "extract_audio": extract_audio,
}
