"""Chunked transcode as three ordinary cpu-pool kinds.

- ``chunk_split``: the source's video, cut on keyframes (or on keyframes that start
  a detected scene) into chunks of about N seconds, stream copy, no audio:
  outputs ``chunk_NNNN.mkv``, result ``{"chunks": [{index, start_s, end_s, frames, uri}]}``.
- ``chunk_encode``: one chunk encoded with the transcode rendition settings, every
  frame kept (``-fps_mode passthrough``), output ``encoded.mkv``.
- ``chunk_concat``: the encoded chunks joined with stream copy in the order given,
  and the source's audio, encoded ONCE over the whole length, muxed beside them,
  output ``<name>.mp4``. In a workflow the audio is an ``extract_audio`` (m4a) step
  that runs beside the chunk encodes and is copied here; alone, the concat encodes
  it. Audio never passes through the chunks, so chunk boundaries cannot make it
  drift against the video.

The concat demuxer only ever reads a list this worker writes, naming copies of the
chunks in its own scratch folder, each checked first to be a one-video-track
Matroska file (see ``ffmpeg_exec.concat_input_args``).

A chunk's duration and tracks are read from its Matroska head in Python
(``worker.matroska``) and the frames written from ffmpeg's own progress report:
an ffprobe process costs ~80 ms of CPU to start, and three of them per chunk were
most of what the chunked path cost over a single pass.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from renderfarm.core.chunking import chunk_spans, frames_in_spans, longest_first, plan_cuts_capped, scene_keyframes
from renderfarm.core.jobs import JobResult
from renderfarm.core.params import ChunkConcatParams, ChunkEncodeParams, ChunkSplitParams
from renderfarm.worker.context import JobContext
from renderfarm.worker.errors import InvalidInput, InvalidMedia
from renderfarm.worker.matroska import NotMatroska, read_file_head
from renderfarm.worker.ffmpeg_exec import (
    concat_input_args,
    concat_list,
    ffmpeg_argv,
    file_url,
    input_args,
    probe,
    probe_packets,
    run_ffmpeg,
)
from renderfarm.worker.media_refs import local_reference
from renderfarm.worker.workloads.cpu import DEFAULT_CRF, _float, audio_streams, media_duration, stream_fps, video_streams

ENCODED_NAME = "encoded.mkv"
MKV = "video/x-matroska"
_VIDEO_ENCODERS = {"h264": "libx264", "hevc": "libx265"}


def chunk_name(index: int) -> str:
    return f"chunk_{index:04d}.mkv"


# --- commands (pure) --------------------------------------------------------------------------


def split_command(input_path: Path | str, stream_index: int, cuts: list[float], pattern: Path) -> list[str]:
    args = [*input_args(input_path), "-map", f"0:{stream_index}", "-an", "-sn", "-dn", "-c", "copy",
            "-f", "segment", "-segment_format", "matroska", "-reset_timestamps", "1"]
    if cuts:
        # A hair before each keyframe: the segment muxer cuts at the first keyframe at or
        # after the time, and a rounded time must never skip past the intended one.
        args += ["-segment_times", ",".join(f"{max(0.0, t - 0.0005):.4f}" for t in cuts)]
    return ffmpeg_argv(*args, file_url(pattern))


def scene_command(input_path: Path | str, stream_index: int, script: Path) -> list[str]:
    return ffmpeg_argv(*input_args(input_path), "-map", f"0:{stream_index}", "-an", "-sn", "-dn",
                       "-filter_script:v", str(script), "-f", "null", "-")


def scene_filter(threshold: float, report_path: Path) -> str:
    # Scored on a small copy: a hard cut is as obvious at 160 pixels wide, and cheaper.
    # The path is the worker's own scratch folder; quoting stays simple by refusing the
    # few characters that filtergraph quoting would need to escape.
    if re.search(r"['\\\[\];,]", str(report_path)):
        raise RuntimeError(f"scratch path {str(report_path)!r} cannot be quoted in a filtergraph")
    return f"scale=160:-2,select='gt(scene\\,{threshold})',metadata=mode=print:file='{report_path}'"


def parse_scene_times(text: str) -> list[float]:
    return [float(match) for match in re.findall(r"pts_time:(-?[0-9.]+)", text)]


def encode_command(input_path: Path | str, output_path: Path | str, params: ChunkEncodeParams) -> list[str]:
    """The transcode rendition's video settings for one chunk: same encoder, preset,
    rate control, scaling and pixel format; every frame kept as it is timed."""
    args = [*input_args(input_path), "-map", "0:V:0", "-an", "-sn", "-dn",
            "-vf", f"scale=-2:{params.height}", "-c:v", _VIDEO_ENCODERS[params.video_codec],
            "-preset", params.preset, "-pix_fmt", "yuv420p", "-fps_mode", "passthrough"]
    if params.video_bitrate_kbps is not None:
        kbps = params.video_bitrate_kbps
        args += ["-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{2 * kbps}k"]
    else:
        args += ["-crf", str(params.crf if params.crf is not None else DEFAULT_CRF)]
    if params.threads:
        args += ["-threads", str(params.threads)]
    if params.video_codec == "hevc":
        args += ["-tag:v", "hvc1", "-x265-params", "log-level=error"]
    return ffmpeg_argv(*args, "-f", "matroska", file_url(output_path))


def concat_command(list_path: Path, source: Path | str, output_path: Path | str, has_audio: bool,
                   audio_bitrate_kbps: int, video_codec: str | None = "h264", *, audio_encoded: bool = False) -> list[str]:
    """``source`` gives the audio: encoded here at ``audio_bitrate_kbps``, or, with
    ``audio_encoded``, an AAC file made beside the chunks, copied as it is."""
    args = [*concat_input_args(list_path), *input_args(source), "-map", "0:v:0", "-c:v", "copy"]
    if video_codec == "hevc":
        args += ["-tag:v", "hvc1"]  # what Apple players require in MP4, as transcode writes it
    if has_audio and audio_encoded:
        args += ["-map", "1:a:0", "-c:a", "copy"]
    elif has_audio:
        args += ["-map", "1:a:0", "-c:a", "aac", "-b:a", f"{audio_bitrate_kbps}k"]
    return ffmpeg_argv(*args, "-movflags", "+faststart", "-max_muxing_queue_size", "1024", "-f", "mp4",
                       file_url(output_path))


# --- handlers ---------------------------------------------------------------------------------


def _video(ctx: JobContext, path: Path) -> tuple[dict, dict]:
    if not path.is_file():
        raise InvalidMedia(f"input file {path.name!r} is missing")
    info = probe(path, should_stop=ctx.is_cancelled)
    streams = video_streams(info)
    if not streams:
        raise InvalidMedia(f"{path.name!r} has no video stream")
    return info, streams[0]


def chunk_split(ctx: JobContext) -> JobResult:
    params: ChunkSplitParams = ctx.params  # type: ignore[assignment]
    info, video = _video(ctx, ctx.input_path)
    ctx.progress(0, "reading keyframes", "")
    # Times relative to the file's start: ffmpeg shifts its output to start there too.
    origin = _float(info.get("format", {}).get("start_time")) or 0.0
    packets = [(t - origin, key) for t, key in probe_packets(ctx.input_path, video["index"], should_stop=ctx.is_cancelled)]
    if not packets:
        raise InvalidMedia("input has no video packets")
    frame_times = sorted(t for t, _ in packets)
    keyframes = sorted(t for t, key in packets if key)
    fps = stream_fps(video) or 25.0
    duration = max(media_duration(info, video) or 0.0, frame_times[-1] + 1.0 / fps)

    candidates, split_on = keyframes, "keyframes"
    if params.split_on == "scenes":
        ctx.progress(5, "detecting scenes", "")
        script, report_path = ctx.work_dir / "scenes.filter", ctx.work_dir / "scenes.txt"
        script.write_text(scene_filter(params.scene_threshold, report_path))
        run_ffmpeg(scene_command(ctx.input_path, video["index"], script), duration_s=duration,
                   what="scene detection", should_stop=ctx.is_cancelled,
                   on_progress=lambda percent: ctx.progress(5 + 0.4 * percent, "detecting scenes", ""))
        scenes = parse_scene_times(report_path.read_text() if report_path.is_file() else "")
        on_scenes = scene_keyframes(keyframes, [s - origin for s in scenes], tolerance_s=0.5 / fps)
        if on_scenes:
            candidates, split_on = on_scenes, "scenes"

    cuts = [] if duration < params.min_duration_s else plan_cuts_capped(candidates, duration, params.chunk_duration_s,
                                                                         params.max_chunks)
    spans = chunk_spans(cuts, duration)
    frames = frames_in_spans(frame_times, spans)
    out_dir = ctx.work_dir / "chunks"
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx.progress(50, "splitting", f"{len(spans)} chunks")
    run_ffmpeg(split_command(ctx.input_path, video["index"], cuts, out_dir / "chunk_%04d.mkv"), duration_s=duration,
               what="chunk split", should_stop=ctx.is_cancelled,
               on_progress=lambda percent: ctx.progress(50 + 0.4 * percent, "splitting", f"{len(spans)} chunks"))
    written = sorted(out_dir.glob("chunk_*.mkv"))
    if [p.name for p in written] != [chunk_name(i) for i in range(len(spans))]:
        raise RuntimeError(f"chunk split wrote {len(written)} chunks, {len(spans)} planned")

    outputs, chunks = [], []
    for index, ((start, end), count) in enumerate(zip(spans, frames)):
        ctx.raise_if_cancelled()
        name = chunk_name(index)
        temp = ctx.temp_output(name)
        shutil.move(out_dir / name, temp)
        output = ctx.publish(temp, name, MKV)
        outputs.append(output)
        chunks.append({"index": index, "start_s": round(start, 6), "end_s": round(end, 6), "frames": count,
                       "uri": output.uri})
    ctx.progress(100, "chunk_split", "done")
    return JobResult(outputs=outputs, metadata={
        "chunks": chunks,
        "order": longest_first(chunks),
        "split_on": split_on,
        "has_audio": bool(audio_streams(info)),
        "frames": len(frame_times),
        "duration": round(duration, 6),
        "fps": fps,
    })


def _chunk_duration(ctx: JobContext, path: Path) -> float | None:
    """A split's chunk: its duration from the Matroska head. Anything else (a chunk
    from elsewhere) is probed like any input."""
    if not path.is_file():
        raise InvalidMedia(f"input file {path.name!r} is missing")
    try:
        head = read_file_head(path)
    except (NotMatroska, OSError):
        head = None
    if head is not None and [t.type for t in head.tracks] == ["video"]:
        return head.duration_s
    info, video = _video(ctx, path)
    return media_duration(info, video)


def _frames_written(ctx: JobContext, last: object, path: Path, stream_index: int) -> int:
    """Frames of the output's video, as ffmpeg counted them; counted from the file's
    packets only where ffmpeg did not say."""
    frames = getattr(last, "frames", None)
    if frames is not None:
        return frames
    return len(probe_packets(path, stream_index, should_stop=ctx.is_cancelled))


def chunk_encode(ctx: JobContext) -> JobResult:
    params: ChunkEncodeParams = ctx.params  # type: ignore[assignment]
    duration = _chunk_duration(ctx, ctx.input_path)
    ctx.progress(0, "encoding chunk", "")
    temp = ctx.temp_output(ENCODED_NAME)
    try:
        last = run_ffmpeg(encode_command(ctx.input_path, temp, params), duration_s=duration, what="chunk encode",
                          should_stop=ctx.is_cancelled,
                          on_progress=lambda percent: ctx.progress(percent, "encoding chunk", ""))
        frames = _frames_written(ctx, last, temp, 0)
        output = ctx.publish(temp, ENCODED_NAME, MKV)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    ctx.progress(100, "chunk_encode", "done")
    return JobResult(outputs=[output], metadata={
        "frames": frames, "duration": duration, "height": params.height, "video_codec": params.video_codec,
        "threads": params.threads, "size": output.size_bytes,
    })


def _stage_chunk(ctx: JobContext, reference: str, target: Path) -> None:
    """A private copy of one chunk or of the audio (hard link where the filesystem
    allows): what the concat reads cannot change between its check and its use."""
    source = local_reference(reference, ctx.settings, ctx.work_dir, target.name, tenant=ctx.job.tenant,
                             should_stop=ctx.is_cancelled)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def chunk_concat(ctx: JobContext) -> JobResult:
    params: ChunkConcatParams = ctx.params  # type: ignore[assignment]
    folder = ctx.work_dir / "concat"
    folder.mkdir(parents=True, exist_ok=True)
    if params.audio:
        # Encoded by its own step while the chunks encoded: only a copy is left to do.
        audio_from, has_audio, duration = folder / "audio.m4a", True, 0.0
        _stage_chunk(ctx, params.audio, audio_from)
    else:
        info, _ = _video(ctx, ctx.input_path)
        audio_from, has_audio, duration = ctx.input_path, bool(audio_streams(info)), media_duration(info)
    names, shape, frames = [], None, 0
    for index, reference in enumerate(params.chunks):
        ctx.progress(10.0 * index / len(params.chunks), "checking chunks", f"{index + 1}/{len(params.chunks)}")
        name = chunk_name(index)
        _stage_chunk(ctx, reference, folder / name)
        try:
            head = read_file_head(folder / name)
        except NotMatroska as exc:
            raise InvalidMedia(f"chunk {index} is not a Matroska file ({exc})") from exc
        tracks = head.tracks
        if len(tracks) != 1 or tracks[0].type != "video" or tracks[0].codec is None:
            raise InvalidInput(f"chunk {index} is not a video-only Matroska chunk (chunk_encode's output)")
        this_shape = (tracks[0].codec, tracks[0].width, tracks[0].height)
        if params.audio:
            duration = duration + head.duration_s if duration is not None and head.duration_s else None
        if shape is not None and this_shape != shape:
            raise InvalidInput(f"chunk {index} is {this_shape}, chunk 0 is {shape}: chunks must share one encoding")
        shape = this_shape
        names.append(name)
    list_path = folder / "chunks.ffconcat"
    list_path.write_text(concat_list(names))

    output_name = f"{params.name}.mp4"
    temp = ctx.temp_output(output_name)
    try:
        last = run_ffmpeg(concat_command(list_path, audio_from, temp, has_audio, params.audio_bitrate_kbps,
                                         shape[0], audio_encoded=bool(params.audio)),
                          duration_s=duration, what="chunk concat", should_stop=ctx.is_cancelled,
                          on_progress=lambda percent: ctx.progress(10 + 0.9 * percent, "joining chunks", ""))
        frames = _frames_written(ctx, last, temp, 0)
        output = ctx.publish(temp, output_name, "video/mp4")
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    ctx.progress(100, "chunk_concat", "done")
    return JobResult(outputs=[output], metadata={
        "chunks": len(names), "frames": frames, "video_codec": shape[0], "width": shape[1], "height": shape[2],
        "has_audio": has_audio, "size": output.size_bytes,
    })


HANDLERS = {"chunk_split": chunk_split, "chunk_encode": chunk_encode, "chunk_concat": chunk_concat}
