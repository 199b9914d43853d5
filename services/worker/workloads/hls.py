"""``package_hls``: an ABR ladder of H.264/AAC renditions, segmented as HLS with a
master playlist.

One ffmpeg run decodes the source once, scales it once per rung and feeds the
``hls`` muxer, which writes every variant's playlist and segments plus the master
playlist. Keyframes are forced every ``segment_duration_s`` on every rung, so
segment boundaries line up across variants and a player can switch between them.

The hls muxer here is only ever an OUTPUT: the input is opened with the edge's
whitelists, which leave the hls and concat demuxers out (a playlist as input is
an SSRF and local-file-read vector). Everything is written to scratch space, then
published file by file (temporary name, then rename), segments first and the
master playlist last, so a reader who sees the master sees complete variants and a
retried job overwrites the same names.

The job's result lists the playlists and init segments, the files a client names.
Media segments sit beside them under the same prefix (``<rung>_NNNNN.m4s|ts``) and
are counted per rendition (``segments``, ``segment_bytes``) instead of listed: a
two-hour ladder is ~9,000 segments, which would make every read of the job record
(and every presigning pass over its outputs) megabytes long.

The ladder plan and the playlist parsers are pure functions.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from renderfarm.core.jobs import JobResult
from renderfarm.core.params import HlsRendition, PackageHlsParams
from renderfarm.worker.context import JobContext
from renderfarm.worker.errors import InvalidMedia
from renderfarm.worker.ffmpeg_exec import ffmpeg_argv, file_url, input_args, probe, run_ffmpeg
from renderfarm.worker.workloads.cpu import audio_streams, media_duration, video_streams

MASTER_PLAYLIST = "master.m3u8"
MEDIA_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".ts": "video/mp2t",
}


# --- the ladder (pure) ---------------------------------------------------------------------


def plan_ladder(renditions: list[HlsRendition], source_height: int) -> list[HlsRendition]:
    """The rungs to encode, tallest first: never above the source (upscaling adds bits,
    not detail). When every rung asked for is taller than the source, one rung at the
    source height (even) with the cheapest bitrate asked for."""
    fitting = [r for r in renditions if r.height <= source_height]
    if not fitting:
        cheapest = min(renditions, key=lambda r: r.video_bitrate_kbps)
        height = max(16, source_height - source_height % 2)
        fitting = [HlsRendition(height=height, video_bitrate_kbps=cheapest.video_bitrate_kbps,
                                audio_bitrate_kbps=cheapest.audio_bitrate_kbps)]
    return sorted(fitting, key=lambda r: (-r.height, -r.video_bitrate_kbps))


def hls_command(input_path: Path | str, out_dir: Path, ladder: list[HlsRendition], has_audio: bool,
                params: PackageHlsParams) -> list[str]:
    """The exact ffmpeg argv: one split of the first video stream per rung, each rung its
    own variant (video + a copy of the first audio stream), playlists ``<name>.m3u8``,
    segments ``<name>_NNNNN.m4s|ts``, init segments ``<name>_init.mp4``."""
    count = len(ladder)
    labels = "".join(f"[s{i}]" for i in range(count))
    graph = [f"[0:V:0]split={count}{labels}" if count > 1 else "[0:V:0]null[s0]"]
    graph += [f"[s{i}]scale=-2:{rung.height}[v{i}]" for i, rung in enumerate(ladder)]
    args = [*input_args(input_path), "-filter_complex", ";".join(graph)]
    for i in range(count):
        args += ["-map", f"[v{i}]"]
        if has_audio:
            args += ["-map", "0:a:0"]
    args += ["-c:v", "libx264", "-preset", params.preset, "-pix_fmt", "yuv420p", "-profile:v", "high"]
    for i, rung in enumerate(ladder):
        kbps = rung.video_bitrate_kbps
        args += [f"-b:v:{i}", f"{kbps}k", f"-maxrate:v:{i}", f"{kbps}k", f"-bufsize:v:{i}", f"{2 * kbps}k"]
        if has_audio:
            args += [f"-b:a:{i}", f"{rung.audio_bitrate_kbps}k"]
    if has_audio:
        args += ["-c:a", "aac", "-ac", "2"]
    segment_ext = "m4s" if params.segment_type == "fmp4" else "ts"
    streams = " ".join(f"v:{i},a:{i},name:{rung.name}" if has_audio else f"v:{i},name:{rung.name}"
                       for i, rung in enumerate(ladder))
    args += [
        # Aligned segment boundaries on every rung: a keyframe at each multiple of the target.
        "-force_key_frames", f"expr:gte(t,n_forced*{params.segment_duration_s})",
        "-f", "hls", "-hls_time", str(params.segment_duration_s), "-hls_playlist_type", "vod",
        "-hls_segment_type", params.segment_type,
        "-hls_segment_filename", file_url(out_dir / f"%v_%05d.{segment_ext}"),
        "-master_pl_name", MASTER_PLAYLIST,
        "-var_stream_map", streams,
    ]
    if params.segment_type == "fmp4":
        args += ["-hls_fmp4_init_filename", "%v_init.mp4"]
    return ffmpeg_argv(*args, file_url(out_dir / "%v.m3u8"))


# --- playlists (pure) ------------------------------------------------------------------------


_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def playlist_attributes(text: str) -> dict[str, str]:
    """``KEY=value,KEY="quoted, value"`` as a dict (quotes removed)."""
    return {key: value.strip('"') for key, value in _ATTRIBUTE.findall(text)}


@dataclass(frozen=True)
class Variant:
    uri: str
    bandwidth: int
    resolution: tuple[int, int] | None
    codecs: list[str]


@dataclass(frozen=True)
class MediaPlaylist:
    target_duration: int
    segments: list[tuple[float, str]]  # (EXTINF duration, URI)
    init_segment: str | None
    ended: bool
    playlist_type: str | None

    @property
    def duration(self) -> float:
        return sum(length for length, _ in self.segments)


def parse_master_playlist(text: str) -> list[Variant]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("not an HLS playlist (no #EXTM3U)")
    variants = []
    for position, line in enumerate(lines):
        if not line.startswith("#EXT-X-STREAM-INF:"):
            continue
        attributes = playlist_attributes(line.partition(":")[2])
        uri = next((later for later in lines[position + 1:] if not later.startswith("#")), None)
        if uri is None:
            raise ValueError("#EXT-X-STREAM-INF without a URI")
        resolution = None
        if "RESOLUTION" in attributes:
            width, _, height = attributes["RESOLUTION"].partition("x")
            resolution = (int(width), int(height))
        codecs = [c.strip() for c in attributes.get("CODECS", "").split(",") if c.strip()]
        variants.append(Variant(uri=uri, bandwidth=int(attributes["BANDWIDTH"]), resolution=resolution, codecs=codecs))
    return variants


def parse_media_playlist(text: str) -> MediaPlaylist:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or lines[0] != "#EXTM3U":
        raise ValueError("not an HLS playlist (no #EXTM3U)")
    target, init, ended, playlist_type = None, None, False, None
    segments: list[tuple[float, str]] = []
    pending: float | None = None
    for line in lines[1:]:
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = int(line.partition(":")[2])
        elif line.startswith("#EXT-X-MAP:"):
            init = playlist_attributes(line.partition(":")[2]).get("URI")
        elif line.startswith("#EXT-X-PLAYLIST-TYPE:"):
            playlist_type = line.partition(":")[2]
        elif line == "#EXT-X-ENDLIST":
            ended = True
        elif line.startswith("#EXTINF:"):
            pending = float(line.partition(":")[2].split(",")[0])
        elif not line.startswith("#"):
            if pending is None:
                raise ValueError(f"segment {line!r} without #EXTINF")
            segments.append((pending, line))
            pending = None
    if target is None:
        raise ValueError("media playlist without #EXT-X-TARGETDURATION")
    return MediaPlaylist(target_duration=target, segments=segments, init_segment=init, ended=ended,
                         playlist_type=playlist_type)


_SEGMENT = re.compile(r"^(?P<rung>[A-Za-z0-9_-]+)_(?P<number>\d{5,})\.(?:m4s|ts)$")


def segment_rung(name: str) -> str | None:
    """The rendition a media segment belongs to; None for anything else (playlists,
    init segments)."""
    match = _SEGMENT.match(name)
    return match.group("rung") if match else None


def publish_order(names: list[str], ladder: list[HlsRendition]) -> list[str]:
    """Segments and init segments, then the variants' playlists, then the master: a
    reader never finds a playlist naming a file that is not there yet."""
    playlists = {f"{rung.name}.m3u8" for rung in ladder}
    rank = {name: (2 if name == MASTER_PLAYLIST else 1 if name in playlists else 0) for name in names}
    return sorted(names, key=lambda name: (rank[name], name))


# --- the job ---------------------------------------------------------------------------------


def package_hls(ctx: JobContext) -> JobResult:
    params: PackageHlsParams = ctx.params  # type: ignore[assignment]
    if not ctx.input_path.is_file():
        raise InvalidMedia(f"input file {ctx.input_path.name!r} is missing")
    info = probe(ctx.input_path, should_stop=ctx.is_cancelled)
    videos = video_streams(info)
    if not videos or not videos[0].get("height"):
        raise InvalidMedia("input has no video stream")
    source_height = int(videos[0]["height"])
    has_audio = bool(audio_streams(info))
    ladder = plan_ladder(params.renditions, source_height)

    out_dir = ctx.work_dir / "hls"
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx.progress(0, "package_hls", f"{len(ladder)} renditions")
    run_ffmpeg(hls_command(ctx.input_path, out_dir, ladder, has_audio, params),
               duration_s=media_duration(info), what="package hls", should_stop=ctx.is_cancelled,
               on_progress=lambda percent: ctx.progress(0.95 * percent, "package_hls", f"{len(ladder)} renditions"))

    master_path = out_dir / MASTER_PLAYLIST
    if not master_path.is_file():
        raise RuntimeError("package hls: ffmpeg wrote no master playlist")
    variants = {v.uri: v for v in parse_master_playlist(master_path.read_text())}
    renditions = []
    for rung in ladder:
        playlist_name = f"{rung.name}.m3u8"
        variant = variants.get(playlist_name)
        if variant is None:
            raise RuntimeError(f"package hls: the master playlist has no variant {playlist_name}")
        media = parse_media_playlist((out_dir / playlist_name).read_text())
        renditions.append({
            "name": rung.name, "playlist": playlist_name, "height": rung.height,
            "width": variant.resolution[0] if variant.resolution else None,
            "bandwidth": variant.bandwidth, "codecs": variant.codecs,
            "video_bitrate_kbps": rung.video_bitrate_kbps,
            "audio_bitrate_kbps": rung.audio_bitrate_kbps if has_audio else None,
            "segments": len(media.segments), "duration": round(media.duration, 3),
            "target_duration": media.target_duration, "init_segment": media.init_segment,
        })

    ctx.progress(96, "publishing", "")
    outputs, segment_bytes = [], {rung.name: 0 for rung in ladder}
    for name in publish_order([p.name for p in out_dir.iterdir() if p.is_file()], ladder):
        ctx.raise_if_cancelled()
        temp = ctx.temp_output(name)
        shutil.move(out_dir / name, temp)  # work_dir may sit on another filesystem than the outputs
        output = ctx.publish(temp, name, MEDIA_TYPES.get(Path(name).suffix))
        rung = segment_rung(name)
        if rung is None:
            outputs.append(output)
        else:
            segment_bytes[rung] = segment_bytes.get(rung, 0) + (output.size_bytes or 0)
    for rendition in renditions:
        rendition["segment_bytes"] = segment_bytes.get(rendition["name"], 0)
        rendition["segment_names"] = f"{rendition['name']}_NNNNN.{'m4s' if params.segment_type == 'fmp4' else 'ts'}"
    master_uri = next(o.uri for o in outputs if o.name == MASTER_PLAYLIST)
    ctx.progress(100, "package_hls", "done")
    skipped = [r.name for r in params.renditions if r.height > source_height]
    return JobResult(outputs=outputs, metadata={
        "master": MASTER_PLAYLIST,
        # Where the segments sit: the playlists' own folder or prefix.
        "base_uri": master_uri.rsplit("/", 1)[0] + "/",
        "segment_type": params.segment_type,
        "segment_duration_s": params.segment_duration_s,
        "source": {"height": source_height, "width": videos[0].get("width"), "has_audio": has_audio,
                   "duration": media_duration(info)},
        "renditions": renditions,
        "skipped_upscale": skipped,
    })


HANDLERS = {"package_hls": package_hls}
