"""package_hls's pure parts: the ladder plan, the argv's input rules, the playlist parsers."""

from __future__ import annotations

import pytest

from renderfarm.core.params import HlsRendition, PackageHlsParams
from renderfarm.worker.ffmpeg_exec import FORMAT_WHITELIST
from renderfarm.worker.workloads.hls import (
    MASTER_PLAYLIST,
    hls_command,
    parse_master_playlist,
    parse_media_playlist,
    plan_ladder,
    publish_order,
)

MASTER = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-STREAM-INF:BANDWIDTH=510400,RESOLUTION=320x240,CODECS="avc1.64000d,mp4a.40.2"
240p.m3u8

#EXT-X-STREAM-INF:BANDWIDTH=272800,RESOLUTION=160x120,CODECS="avc1.64000b,mp4a.40.2"
120p.m3u8
"""

MEDIA = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-MAP:URI="240p_init.mp4"
#EXTINF:2.000000,
240p_00000.m4s
#EXTINF:2.000000,
240p_00001.m4s
#EXTINF:1.000000,
240p_00002.m4s
#EXT-X-ENDLIST
"""


def rung(height: int, kbps: int) -> HlsRendition:
    return HlsRendition(height=height, video_bitrate_kbps=kbps)


def test_the_default_ladder_never_upscales_a_small_source():
    ladder = plan_ladder(PackageHlsParams().renditions, source_height=480)
    assert [r.height for r in ladder] == [480, 360, 240]


def test_a_source_below_every_rung_gets_one_rung_at_its_own_height_and_the_cheapest_bitrate():
    ladder = plan_ladder([rung(720, 2800), rung(480, 1400)], source_height=203)
    assert [(r.height, r.video_bitrate_kbps, r.name) for r in ladder] == [(202, 1400, "202p")]


def test_the_ladder_is_tallest_first_whatever_order_it_was_given_in():
    assert [r.height for r in plan_ladder([rung(240, 400), rung(720, 2800), rung(480, 1400)], 1080)] == [720, 480, 240]


def test_rendition_names_must_be_unique_and_heights_even():
    with pytest.raises(ValueError):
        PackageHlsParams(renditions=[rung(240, 400), rung(240, 300)])
    with pytest.raises(ValueError):
        HlsRendition(height=241, video_bitrate_kbps=400)


@pytest.mark.parametrize("segment_type, ext", [("fmp4", "m4s"), ("mpegts", "ts")])
def test_hls_is_only_an_output_and_the_input_keeps_the_whitelists(tmp_path, segment_type, ext):
    params = PackageHlsParams(renditions=[rung(240, 400), rung(120, 200)], segment_type=segment_type)
    argv = hls_command(tmp_path / "in.mp4", tmp_path / "out", params.renditions, True, params)
    before_input = argv[:argv.index("-i")]
    assert before_input[before_input.index("-format_whitelist") + 1] == FORMAT_WHITELIST
    assert before_input[before_input.index("-protocol_whitelist") + 1] == "file"
    assert "-f" not in before_input, "the input's demuxer is never forced (no hls/concat input)"
    assert argv[argv.index("-f") + 1] == "hls" and argv.index("-f") > argv.index("-i")
    assert argv[argv.index("-var_stream_map") + 1] == "v:0,a:0,name:240p v:1,a:1,name:120p"
    assert argv[argv.index("-hls_segment_filename") + 1].endswith(f"%v_%05d.{ext}")
    assert ("-hls_fmp4_init_filename" in argv) == (segment_type == "fmp4")
    assert argv[-1] == "file:" + str(tmp_path / "out" / "%v.m3u8")


def test_whitelisted_demuxers_exclude_playlists_and_lists():
    names = set(FORMAT_WHITELIST.split(","))
    assert not names & {"hls", "applehttp", "dash", "concat", "image2", "ffmetadata"}


def test_without_audio_each_variant_is_video_only(tmp_path):
    params = PackageHlsParams(renditions=[rung(240, 400)])
    argv = hls_command(tmp_path / "in.mp4", tmp_path / "out", params.renditions, False, params)
    assert argv[argv.index("-var_stream_map") + 1] == "v:0,name:240p"
    assert "0:a:0" not in argv and "-c:a" not in argv


def test_master_playlist_parse():
    variants = parse_master_playlist(MASTER)
    assert [(v.uri, v.bandwidth, v.resolution) for v in variants] == [
        ("240p.m3u8", 510400, (320, 240)), ("120p.m3u8", 272800, (160, 120))]
    assert variants[0].codecs == ["avc1.64000d", "mp4a.40.2"]


def test_media_playlist_parse():
    media = parse_media_playlist(MEDIA)
    assert media.target_duration == 2 and media.ended and media.playlist_type == "VOD"
    assert media.init_segment == "240p_init.mp4"
    assert [uri for _, uri in media.segments] == ["240p_00000.m4s", "240p_00001.m4s", "240p_00002.m4s"]
    assert media.duration == pytest.approx(5.0)
    assert not parse_media_playlist(MEDIA.replace("#EXT-X-ENDLIST\n", "")).ended


def test_playlists_that_are_not_hls_are_refused():
    with pytest.raises(ValueError):
        parse_master_playlist("hello")
    with pytest.raises(ValueError):
        parse_media_playlist("#EXTM3U\n#EXTINF:2.0,\n")


def test_segments_are_published_before_playlists_and_the_master_last():
    ladder = [rung(240, 400)]
    order = publish_order([MASTER_PLAYLIST, "240p.m3u8", "240p_00001.m4s", "240p_init.mp4", "240p_00000.m4s"], ladder)
    assert order == ["240p_00000.m4s", "240p_00001.m4s", "240p_init.mp4", "240p.m3u8", MASTER_PLAYLIST]


def test_only_media_segments_are_counted_instead_of_listed():
    from renderfarm.worker.workloads.hls import segment_rung

    assert segment_rung("720p_00042.m4s") == "720p" and segment_rung("low_00000.ts") == "low"
    assert segment_rung("my_rung_123456.ts") == "my_rung"
    for listed in ("master.m3u8", "720p.m3u8", "720p_init.mp4", "720p_1.m4s", "x_00001.mp4"):
        assert segment_rung(listed) is None
