"""package_hls as an ordinary job on a real cpu worker: the ladder is read back with
ffprobe (through the HLS demuxer, as a player would) and the playlists are parsed."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from renderfarm.core.jobs import JobStatus
from renderfarm.worker.workloads.hls import parse_master_playlist, parse_media_playlist
from tests.support.farm import open_store, output_path, run_job
from tests.support.media import make_clip
from tests.support.procs import start_worker

DURATION_S = 6.0
LADDER = [
    {"height": 480, "video_bitrate_kbps": 1400},  # above the 240p source: must be skipped
    {"height": 240, "video_bitrate_kbps": 400, "audio_bitrate_kbps": 64},
    {"name": "low", "height": 120, "video_bitrate_kbps": 150, "audio_bitrate_kbps": 32},
]


@pytest.fixture
def farm(rf_settings_env, data_dir):
    worker = start_worker(rf_settings_env, pool="cpu")
    yield open_store(), worker
    worker.stop(signal.SIGTERM, 30)


def read_back(playlist: Path) -> dict:
    """What a player gets from one variant playlist: ffprobe through the hls demuxer
    (run here, by the test, on files the job wrote: not the worker's input rules)."""
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", str(playlist)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("segment_type, segment_ext", [("fmp4", "m4s"), ("mpegts", "ts")])
def test_package_hls_writes_a_ladder_a_player_can_read(farm, data_dir, segment_type, segment_ext):
    store, worker = farm
    clip = make_clip(data_dir / "inputs" / "clip.mp4", duration=DURATION_S, width=320, height=240)
    done = run_job(store, worker, "package_hls", clip,
                   {"renditions": LADDER, "segment_type": segment_type, "segment_duration_s": 2})

    names = [o.name for o in done.result.outputs]
    assert names[-1] == "master.m3u8", "the master playlist is published last"
    init = ["240p_init.mp4", "low_init.mp4"] if segment_type == "fmp4" else []
    assert names == [*init, "240p.m3u8", "low.m3u8", "master.m3u8"]  # playlists and init segments only
    assert done.result.metadata["base_uri"] == done.result.outputs[-1].uri[:-len("master.m3u8")]
    assert not any(".tmp-" in name for name in names)
    assert done.result.metadata["skipped_upscale"] == ["480p"]

    variants = parse_master_playlist(output_path(done, "master.m3u8").read_text())
    assert [(v.uri, v.resolution) for v in variants] == [("240p.m3u8", (320, 240)), ("low.m3u8", (160, 120))]
    for variant, kbps in zip(variants, (400 + 64, 150 + 32)):
        # BANDWIDTH is the peak: at least the configured rates, and not wildly above them.
        assert kbps * 1000 <= variant.bandwidth <= 3 * kbps * 1000, variant
        assert variant.codecs[0].startswith("avc1.") and "mp4a.40.2" in variant.codecs, variant

    for variant, height in zip(variants, (240, 120)):
        playlist = output_path(done, variant.uri)
        media = parse_media_playlist(playlist.read_text())
        assert media.ended and media.playlist_type == "VOD"
        assert media.target_duration == 2
        assert len(media.segments) == 3 and all(length <= 2.0 + 1e-3 for length, _ in media.segments)
        assert media.duration == pytest.approx(DURATION_S, abs=0.05)
        # Segments sit beside the playlist, counted in the result rather than listed one by one.
        assert all(uri.endswith(f".{segment_ext}") and uri not in names for _, uri in media.segments)
        assert all(output_path(done, "master.m3u8").with_name(uri).is_file() for _, uri in media.segments)
        rendition = next(r for r in done.result.metadata["renditions"] if r["playlist"] == variant.uri)
        assert rendition["segments"] == 3
        assert rendition["segment_bytes"] == sum(playlist.with_name(uri).stat().st_size for _, uri in media.segments)
        if segment_type == "fmp4":
            assert media.init_segment == f"{Path(variant.uri).stem}_init.mp4" and media.init_segment in names
        else:
            assert media.init_segment is None

        info = read_back(playlist)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
        assert (video["codec_name"], video["height"]) == ("h264", height)
        assert audio["codec_name"] == "aac"
        assert float(info["format"]["duration"]) == pytest.approx(DURATION_S, abs=0.1)


def test_package_hls_refuses_a_playlist_as_its_input(farm, data_dir):
    """Writing HLS is allowed; reading it is not: an HLS playlist disguised as .mp4,
    naming a file outside the allowed roots, fails as invalid media."""
    store, worker = farm
    secret = make_clip(data_dir.parent / "outside" / "secret.ts", duration=2.0)
    disguised = data_dir / "inputs" / "disguised.mp4"
    disguised.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{secret}\n#EXT-X-ENDLIST\n")
    done = run_job(store, worker, "package_hls", disguised, {}, expect=JobStatus.failed)
    assert done.error.type == "invalid_media", done.error
    assert done.result is None


def test_package_hls_of_a_silent_video_has_video_only_variants(farm, data_dir):
    store, worker = farm
    clip = make_clip(data_dir / "inputs" / "silent.mp4", duration=4.0, width=320, height=240, audio=False)
    done = run_job(store, worker, "package_hls", clip,
                   {"renditions": [{"height": 120, "video_bitrate_kbps": 150}], "segment_duration_s": 2})
    [variant] = parse_master_playlist(output_path(done, "master.m3u8").read_text())
    assert variant.resolution == (160, 120) and not any(c.startswith("mp4a") for c in variant.codecs)
    info = read_back(output_path(done, "120p.m3u8"))
    assert [s["codec_type"] for s in info["streams"]] == ["video"]
    assert done.result.metadata["renditions"][0]["audio_bitrate_kbps"] is None
