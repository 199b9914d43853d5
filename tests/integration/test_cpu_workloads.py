"""CPU pool handlers run for real: ffmpeg on tiny generated clips, outputs checked with ffprobe."""

from __future__ import annotations

import json
import os
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import pytest

from renderfarm.core.jobs import Job, JobResult
from renderfarm.core.kinds import get_kind
from renderfarm.core.params import Rendition
from renderfarm.core.settings import Settings
from renderfarm.worker.context import JobContext
from renderfarm.worker.errors import InvalidMedia, JobCancelled
from renderfarm.worker.ffmpeg_exec import run_ffmpeg
from renderfarm.worker.workloads.cpu import HANDLERS, transcode_command
from tests.support.media import ffprobe, make_clip, stream


# --- media and contexts --------------------------------------------------------------


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    return {
        "clip": make_clip(folder / "clip.mp4", duration=2.0),
        "silent": make_clip(folder / "silent.mp4", duration=1.0, audio=False),
        "voice": make_clip(folder / "voice.m4a", duration=1.0, video=False),
        "long": make_clip(folder / "long.mp4", duration=3.0),
    }


class Run:
    """A JobContext for one handler call, with what it reported."""

    def __init__(self, tmp_path: Path, kind: str, params: dict, input_path: Path,
                 is_cancelled: Callable[[], bool] = lambda: False):
        self.reports: list[tuple[float, str, str]] = []
        settings = Settings(data_dir=tmp_path / "data")
        job = Job(id=uuid.uuid4().hex, kind=kind, input=input_path.as_uri(), params=params,
                  queue="cpu.normal", created_at=datetime.now(timezone.utc))
        work_dir = tmp_path / "work" / job.id
        work_dir.mkdir(parents=True)
        self.ctx = JobContext(
            job=job,
            params=get_kind(kind).params_model.model_validate(params),
            settings=settings,
            input_path=input_path,
            work_dir=work_dir,
            output_dir=settings.outputs_dir / job.id,
            report=lambda percent, stage, message: self.reports.append((percent, stage, message)),
            is_cancelled=is_cancelled,
            # Check on every progress call: the tests must not depend on timing.
            _cancel_check_interval_s=0.0,
        )
        self.kind = kind

    def __call__(self) -> JobResult:
        return HANDLERS[self.kind](self.ctx)

    @property
    def output_dir(self) -> Path:
        return self.ctx.output_dir

    def output_names(self) -> list[str]:
        return sorted(p.name for p in self.output_dir.iterdir()) if self.output_dir.exists() else []


def run(tmp_path: Path, kind: str, params: dict, input_path: Path, **kwargs) -> tuple[JobResult, Run]:
    job = Run(tmp_path, kind, params, input_path, **kwargs)
    result = job()
    # Only published names remain: temporary files were renamed, not copied.
    assert all(not name.startswith(".") and ".tmp-" not in name for name in job.output_names())
    assert sorted(o.name for o in result.outputs) == job.output_names()
    percents = [percent for percent, _, _ in job.reports]
    assert percents == sorted(percents), "progress went backwards"
    assert percents[-1] == 100
    return result, job


def path_of(result: JobResult, name: str) -> Path:
    output = next(o for o in result.outputs if o.name == name)
    path = Path(output.uri.removeprefix("file://"))
    assert output.size_bytes == path.stat().st_size > 0
    return path


def image_size(path: Path) -> tuple[int, int]:
    video = stream(ffprobe(path), "video")
    return video["width"], video["height"]


# --- probe ---------------------------------------------------------------------------


def test_probe_reports_container_and_streams(tmp_path, media):
    result, _ = run(tmp_path, "probe", {}, media["clip"])
    meta = result.metadata
    assert [o.name for o in result.outputs] == ["probe.json"]
    assert json.loads(path_of(result, "probe.json").read_text()) == meta
    assert "mp4" in meta["format_name"]
    assert meta["duration"] == pytest.approx(2.0, abs=0.1)
    assert meta["size"] == media["clip"].stat().st_size
    assert meta["bit_rate"] > 0
    video = next(s for s in meta["streams"] if s["type"] == "video")
    audio = next(s for s in meta["streams"] if s["type"] == "audio")
    assert (video["codec"], video["width"], video["height"], video["fps"]) == ("h264", 320, 240, 25.0)
    assert (audio["codec"], audio["sample_rate"], audio["channels"]) == ("aac", 48000, 1)


# --- transcode -----------------------------------------------------------------------


def test_transcode_writes_one_mp4_per_rendition(tmp_path, media):
    params = {"renditions": [
        {"height": 180, "preset": "ultrafast"},
        {"name": "small", "height": 120, "video_codec": "hevc", "crf": 30, "preset": "ultrafast", "audio_bitrate_kbps": 64},
    ]}
    result, _ = run(tmp_path, "transcode", params, media["clip"])
    assert [o.name for o in result.outputs] == ["180p.mp4", "small.mp4"]
    assert all(o.media_type == "video/mp4" for o in result.outputs)
    expected = {"180p.mp4": ("h264", 240, 180), "small.mp4": ("hevc", 160, 120)}
    for name, (codec, width, height) in expected.items():
        path = path_of(result, name)
        info = ffprobe(path)
        video, audio = stream(info, "video"), stream(info, "audio")
        assert (video["codec_name"], video["width"], video["height"]) == (codec, width, height)
        assert video["pix_fmt"] == "yuv420p"
        assert audio is not None and audio["codec_name"] == "aac"
        assert float(info["format"]["duration"]) == pytest.approx(2.0, abs=0.1)
        head = path.read_bytes()
        assert head.index(b"moov") < head.index(b"mdat"), "faststart: the index must come first"
    by_name = {r["name"]: r for r in result.metadata["renditions"]}
    assert (by_name["180p"]["width"], by_name["180p"]["height"]) == (240, 180)
    assert (by_name["small"]["width"], by_name["small"]["height"]) == (160, 120)
    assert by_name["small"]["duration"] == pytest.approx(2.0, abs=0.1)
    assert by_name["small"]["size"] == path_of(result, "small.mp4").stat().st_size


def test_transcode_progress_spans_the_renditions(tmp_path, media):
    params = {"renditions": [{"height": 120, "preset": "ultrafast"}, {"height": 96, "preset": "ultrafast"}]}
    _, job = run(tmp_path, "transcode", params, media["clip"])
    stages = [stage for _, stage, _ in job.reports]
    assert "transcode 120p" in stages and "transcode 96p" in stages
    first_of_second = next(percent for percent, stage, _ in job.reports if stage == "transcode 96p")
    assert first_of_second == pytest.approx(50.0)


def test_transcode_bitrate_mode_caps_the_video_bitrate(tmp_path, media):
    rendition = {"height": 240, "video_bitrate_kbps": 100, "preset": "ultrafast"}
    argv = transcode_command(media["clip"], tmp_path / "x.mp4", Rendition(**rendition), True)
    for option, value in (("-b:v", "100k"), ("-maxrate", "100k"), ("-bufsize", "200k")):
        assert argv[argv.index(option) + 1] == value
    assert "-crf" not in argv
    capped, _ = run(tmp_path / "capped", "transcode", {"renditions": [rendition]}, media["clip"])
    free, _ = run(tmp_path / "free", "transcode", {"renditions": [{"height": 240, "crf": 18, "preset": "ultrafast"}]}, media["clip"])
    capped_rate = int(stream(ffprobe(path_of(capped, "240p.mp4")), "video")["bit_rate"])
    free_rate = int(stream(ffprobe(path_of(free, "240p.mp4")), "video")["bit_rate"])
    assert capped_rate < 100_000 * 1.5
    assert free_rate > 2 * capped_rate


def test_transcode_without_audio_makes_video_only_outputs(tmp_path, media):
    result, _ = run(tmp_path, "transcode", {"renditions": [{"height": 120, "preset": "ultrafast"}]}, media["silent"])
    info = ffprobe(path_of(result, "120p.mp4"))
    assert stream(info, "video")["height"] == 120
    assert stream(info, "audio") is None
    assert result.metadata["renditions"][0]["has_audio"] is False


def test_transcode_of_audio_only_input_is_invalid_media(tmp_path, media):
    job = Run(tmp_path, "transcode", {"renditions": [{"height": 120}]}, media["voice"])
    with pytest.raises(InvalidMedia, match="no video stream"):
        job()
    assert job.output_names() == []


def test_transcode_command_is_what_the_handler_runs(tmp_path, media):
    """The benchmark runs transcode_command directly; it must produce the same file."""
    rendition = Rendition(height=120, preset="ultrafast")
    direct = tmp_path / "direct.mp4"
    argv = transcode_command(media["clip"], direct, rendition, True)
    assert argv[0] == "ffmpeg"
    for flag in ("-nostdin", "-hide_banner", "-nostats"):
        assert flag in argv
    assert argv[argv.index("-progress") + 1] == "pipe:1"
    assert argv[argv.index("-protocol_whitelist") + 1] == "file"
    assert argv.index("-protocol_whitelist") < argv.index("-i")
    run_ffmpeg(argv)
    handled, _ = run(tmp_path, "transcode", {"renditions": [rendition.model_dump()]}, media["clip"])
    assert stream(ffprobe(direct), "video")["height"] == stream(ffprobe(path_of(handled, "120p.mp4")), "video")["height"] == 120


# --- cancellation --------------------------------------------------------------------


def ffmpeg_children() -> list[int]:
    """ffmpeg processes started by this test process."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if comm == "ffmpeg" and ppid == os.getpid():
            pids.append(int(entry))
    return pids


def exists(pid: int) -> bool:
    """Still running, or exited but never waited for (a zombie): either is a leak."""
    return Path(f"/proc/{pid}").exists()


def test_cancelling_mid_transcode_kills_ffmpeg_and_leaves_no_output(tmp_path, media):
    seen_running: list[int] = []

    def is_cancelled() -> bool:
        # Cancelled as soon as a progress report arrives while ffmpeg is encoding.
        seen_running.extend(ffmpeg_children())
        return bool(seen_running)

    # A slow preset, so the encode is certainly still running at its first report.
    params = {"renditions": [{"name": "slow", "height": 240, "video_codec": "hevc", "preset": "slow"}]}
    job = Run(tmp_path, "transcode", params, media["long"], is_cancelled=is_cancelled)
    with pytest.raises(JobCancelled):
        job()
    assert seen_running, "ffmpeg had finished before the job was cancelled"
    assert not any(exists(pid) for pid in set(seen_running))
    assert ffmpeg_children() == []
    assert job.output_names() == []  # neither slow.mp4 nor its temporary file


def test_a_cancelled_job_stops_before_ffmpeg_starts(tmp_path, media):
    job = Run(tmp_path, "extract_audio", {}, media["clip"], is_cancelled=lambda: True)
    with pytest.raises(JobCancelled):
        job()
    assert job.output_names() == []


# --- thumbnails ----------------------------------------------------------------------


def test_thumbnails_at_given_times(tmp_path, media):
    result, _ = run(tmp_path, "thumbnail", {"times": [0.5, 1.5], "width": 160}, media["clip"])
    assert [o.name for o in result.outputs] == ["thumb-0001.jpg", "thumb-0002.jpg"]
    assert all(o.media_type == "image/jpeg" for o in result.outputs)
    for output in result.outputs:
        path = path_of(result, output.name)
        assert stream(ffprobe(path), "video")["codec_name"] == "mjpeg"
        assert image_size(path) == (160, 120)
    assert result.metadata["times"] == [0.5, 1.5]
    # Different moments of a moving test pattern are different pictures.
    assert path_of(result, "thumb-0001.jpg").read_bytes() != path_of(result, "thumb-0002.jpg").read_bytes()


def test_evenly_spaced_thumbnails_with_a_sprite_sheet(tmp_path, media):
    params = {"count": 4, "width": 160, "format": "png", "sprite": True, "sprite_columns": 3}
    result, _ = run(tmp_path, "thumbnail", params, media["clip"])
    names = [o.name for o in result.outputs]
    assert names == ["thumb-0001.png", "thumb-0002.png", "thumb-0003.png", "thumb-0004.png", "sprite.png"]
    times = result.metadata["times"]
    assert len(times) == 4 and times == sorted(times)
    assert 0 < times[0] and times[-1] < 2.0 - 0.1, "must avoid the very start and end"
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) - min(gaps) < 0.01
    assert image_size(path_of(result, "thumb-0003.png")) == (160, 120)
    assert stream(ffprobe(path_of(result, "sprite.png")), "video")["codec_name"] == "png"
    assert image_size(path_of(result, "sprite.png")) == (3 * 160, 2 * 120)
    assert result.metadata["sprite"] == {"name": "sprite.png", "columns": 3, "rows": 2}


def test_thumbnail_height_keeps_the_aspect_ratio_and_stays_even(tmp_path, media):
    result, _ = run(tmp_path, "thumbnail", {"times": [1.0], "width": 100}, media["clip"])
    assert image_size(path_of(result, "thumb-0001.jpg")) == (100, 76)  # 75 rounded to even


def test_a_thumbnail_just_before_the_end_is_still_a_frame(tmp_path, media):
    result, _ = run(tmp_path, "thumbnail", {"times": [1.99], "width": 160}, media["clip"])
    assert image_size(path_of(result, "thumb-0001.jpg")) == (160, 120)


def test_thumbnail_times_beyond_the_end_are_invalid_media(tmp_path, media):
    job = Run(tmp_path, "thumbnail", {"times": [0.5, 2.5, 7]}, media["clip"])
    with pytest.raises(InvalidMedia, match=r"beyond the end of the input \(2\.0\d* s\): 2\.5, 7"):
        job()
    assert job.output_names() == []


# --- extract_audio -------------------------------------------------------------------


def test_extract_audio_as_16khz_mono_wav(tmp_path, media):
    result, _ = run(tmp_path, "extract_audio", {}, media["clip"])
    assert [o.name for o in result.outputs] == ["audio.wav"]
    info = ffprobe(path_of(result, "audio.wav"))
    audio = stream(info, "audio")
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("pcm_s16le", 16000, 1)
    assert stream(info, "video") is None
    assert float(info["format"]["duration"]) == pytest.approx(2.0, abs=0.1)


def test_extract_audio_as_stereo_flac(tmp_path, media):
    result, _ = run(tmp_path, "extract_audio", {"format": "flac", "sample_rate": 22050, "channels": 2}, media["voice"])
    audio = stream(ffprobe(path_of(result, "audio.flac")), "audio")
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("flac", 22050, 2)
    assert result.outputs[0].media_type == "audio/flac"


def test_extract_audio_without_an_audio_stream_is_invalid_media(tmp_path, media):
    job = Run(tmp_path, "extract_audio", {}, media["silent"])
    with pytest.raises(InvalidMedia, match="no audio stream"):
        job()
    assert job.output_names() == []


# --- unusable and hostile inputs -----------------------------------------------------

ALL_KINDS = [
    ("probe", {}),
    ("transcode", {"renditions": [{"height": 120}]}),
    ("thumbnail", {"count": 2}),
    ("extract_audio", {}),
]


@pytest.mark.parametrize(("kind", "params"), ALL_KINDS)
def test_corrupt_input_is_invalid_media(tmp_path, kind, params):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(64 * 1024))
    job = Run(tmp_path, kind, params, corrupt)
    with pytest.raises(InvalidMedia):
        job()
    assert job.output_names() == []


@pytest.mark.parametrize(("kind", "params"), ALL_KINDS)
def test_missing_input_is_invalid_media(tmp_path, kind, params):
    with pytest.raises(InvalidMedia, match="missing"):
        Run(tmp_path, kind, params, tmp_path / "gone.mp4")()


@pytest.fixture
def http_server():
    """A local HTTP server that counts requests: a playlist must never reach it."""
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


def playlist(path: Path, segment: str) -> Path:
    path.write_text(f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{segment}\n#EXT-X-ENDLIST\n")
    return path


@pytest.mark.parametrize(("kind", "params"), ALL_KINDS)
def test_an_hls_playlist_pointing_at_a_url_is_refused_without_a_request(tmp_path, http_server, kind, params):
    base, requests = http_server
    hls = playlist(tmp_path / "input.m3u8", f"{base}/segment.ts")
    job = Run(tmp_path, kind, params, hls)
    with pytest.raises(InvalidMedia):
        job()
    assert requests == []
    assert job.output_names() == []


def test_ffmpeg_itself_refuses_a_playlist_input(tmp_path, http_server):
    """Not only the probe: the transcode command's own whitelists stop the fetch."""
    base, requests = http_server
    hls = playlist(tmp_path / "disguised.mp4", f"{base}/segment.ts")
    argv = transcode_command(hls, tmp_path / "out.mp4", Rendition(height=120), True)
    with pytest.raises(InvalidMedia, match="whitelist"):
        run_ffmpeg(argv)
    assert requests == []


def test_a_playlist_of_local_files_is_refused(tmp_path, media):
    # Segments on local disk would pass the protocol whitelist; the demuxer
    # whitelist stops playlists from reading arbitrary files.
    hls = playlist(tmp_path / "local.m3u8", str(media["clip"]))
    with pytest.raises(InvalidMedia, match="whitelist"):
        Run(tmp_path, "probe", {}, hls)()
