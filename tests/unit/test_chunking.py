"""Chunked transcode's pure parts: cut planning on keyframes, frame counts, scene
keyframes, longest-first order, and the concat list the worker writes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from renderfarm.core.chunking import (
    DEFAULT_MAX_CHUNKS,
    chunk_spans,
    frames_in_spans,
    longest_first,
    plan_cuts,
    plan_cuts_capped,
    scene_keyframes,
)
from renderfarm.worker.ffmpeg_exec import CONCAT_CHILD_DEMUXERS, concat_input_args, concat_list, parse_packet_lines
from renderfarm.worker.workloads.chunks import parse_scene_times, split_command


def test_cuts_fall_on_the_keyframes_nearest_each_target():
    keyframes = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert plan_cuts(keyframes, 20.0, 6.0) == [6, 12]  # 0-6, 6-12, 12-20 (no 2 s stub)
    assert plan_cuts([0, 3.5, 7.2, 11], 12.0, 4.0) == [3.5, 7.2]


def test_sparse_keyframes_make_longer_chunks_never_a_cut_off_keyframe():
    assert plan_cuts([0, 10, 20], 30.0, 4.0) == [10, 20]
    assert plan_cuts([0], 30.0, 4.0) == []


def test_a_short_video_is_one_chunk_and_no_chunk_is_a_stub():
    assert plan_cuts([0, 1, 2, 3], 5.0, 4.0) == []
    assert plan_cuts([0, 4, 8.5], 9.0, 4.0) == [4]  # 8.5 would leave a 0.5 s tail


@given(st.lists(st.floats(0.01, 99.0), max_size=60), st.floats(1.0, 20.0))
def test_cuts_are_keyframes_in_order_and_every_chunk_is_at_least_half_a_target(keyframes, target):
    duration = 100.0
    cuts = plan_cuts(keyframes, duration, target)
    assert cuts == sorted(set(cuts)) and set(cuts) <= set(keyframes)
    for start, end in chunk_spans(cuts, duration):
        assert end - start >= 0.5 * target - 1e-9


def test_frames_are_counted_in_the_chunk_they_start_in():
    frames = [i * 0.04 for i in range(300)]  # 12 s at 25 fps
    spans = chunk_spans([4.0, 8.0], 12.0)
    assert frames_in_spans(frames, spans) == [100, 100, 100]
    assert sum(frames_in_spans(frames, chunk_spans([3.96], 12.0))) == 300


def test_scene_keyframes_are_keyframes_on_a_detected_cut():
    assert scene_keyframes([0, 2, 4.52, 6], [4.5, 5.1], tolerance_s=0.02) == [4.52]


def test_longest_chunks_go_first_ties_by_index():
    chunks = [{"index": 0, "start_s": 0, "end_s": 4}, {"index": 1, "start_s": 4, "end_s": 10},
              {"index": 2, "start_s": 10, "end_s": 14}, {"index": 3, "start_s": 14, "end_s": 15}]
    assert longest_first(chunks) == [1, 0, 2, 3]


def test_the_concat_list_names_plain_files_beside_it_only():
    assert concat_list(["chunk_0000.mkv", "chunk_0001.mkv"]) == (
        "ffconcat version 1.0\nfile chunk_0000.mkv\nfile chunk_0001.mkv\n")
    for bad in ["../x.mkv", "/etc/passwd", "file:x.mkv", "a b.mkv", "x.mkv\nfile /etc/passwd", ".hidden"]:
        with pytest.raises(ValueError):
            concat_list([bad])


def test_concat_input_is_safe_file_only_and_its_files_may_only_be_matroska(tmp_path):
    argv = concat_input_args(tmp_path / "chunks.ffconcat")
    assert argv[argv.index("-safe") + 1] == "1"
    assert argv[argv.index("-protocol_whitelist") + 1] == "file"
    assert argv[argv.index("-format_whitelist") + 1].split(",") == ["concat", *CONCAT_CHILD_DEMUXERS]
    assert CONCAT_CHILD_DEMUXERS == ("matroska",)
    assert argv[-1] == "file:" + str(tmp_path / "chunks.ffconcat")


def test_split_times_sit_just_before_each_keyframe(tmp_path):
    argv = split_command(tmp_path / "in.mp4", 0, [4.0, 8.04], tmp_path / "chunk_%04d.mkv")
    assert argv[argv.index("-segment_times") + 1] == "3.9995,8.0395"
    assert argv[argv.index("-c") + 1] == "copy" and "-an" in argv
    assert "-segment_times" not in split_command(tmp_path / "in.mp4", 0, [], tmp_path / "c_%04d.mkv")


def test_packet_and_scene_reports_parse():
    assert parse_packet_lines("0.000000,0.000000,K_\nN/A,0.040000,__\n0.080000,0.080000,__\n\n") == [
        (0.0, True), (0.04, False), (0.08, False)]
    assert parse_scene_times("frame:0    pts:512     pts_time:4.52\nlavfi.scene_score=0.9\n"
                             "frame:1    pts:1024    pts_time:9\nlavfi.scene_score=0.8\n") == [4.52, 9.0]


def test_concat_copies_video_encodes_audio_once_and_tags_hevc_for_apple_players(tmp_path):
    from renderfarm.worker.workloads.chunks import concat_command

    argv = concat_command(tmp_path / "l.ffconcat", tmp_path / "src.mp4", tmp_path / "out.mp4", True, 96, "hevc")
    assert argv[argv.index("-c:v") + 1] == "copy" and argv[argv.index("-tag:v") + 1] == "hvc1"
    assert argv[argv.index("-c:a") + 1] == "aac" and "1:a:0" in argv
    assert argv.count("-format_whitelist") == 2, "the source keeps the ordinary input whitelist"
    plain = concat_command(tmp_path / "l.ffconcat", tmp_path / "src.mp4", tmp_path / "out.mp4", False, 96, "h264")
    assert "-tag:v" not in plain and "-c:a" not in plain


def test_scene_filter_writes_its_report_to_a_quoted_path_and_refuses_unquotable_ones(tmp_path):
    from renderfarm.worker.workloads.chunks import scene_filter

    assert scene_filter(0.3, tmp_path / "scenes.txt").endswith(f"metadata=mode=print:file='{tmp_path}/scenes.txt'")
    assert "gt(scene\\,0.3)" in scene_filter(0.3, tmp_path / "scenes.txt")
    with pytest.raises(RuntimeError):
        scene_filter(0.3, tmp_path / "it's" / "scenes.txt")


def test_a_ten_hour_source_gets_longer_chunks_not_more_than_the_cap():
    keyframes = [2.0 * i for i in range(1, 18_000)]
    cuts = plan_cuts_capped(keyframes, 36_000.0, 30.0, DEFAULT_MAX_CHUNKS)
    assert len(cuts) + 1 <= DEFAULT_MAX_CHUNKS and len(cuts) + 1 >= 0.9 * DEFAULT_MAX_CHUNKS
    assert set(cuts) <= set(keyframes)
    assert plan_cuts_capped(keyframes, 600.0, 30.0, DEFAULT_MAX_CHUNKS) == plan_cuts(keyframes, 600.0, 30.0)


@given(st.lists(st.floats(0.1, 5000.0), min_size=0, max_size=300), st.floats(1.0, 120.0), st.integers(1, 50))
def test_the_chunk_cap_always_holds(keyframes, target, cap):
    assert len(plan_cuts_capped(keyframes, 5000.0, target, cap)) + 1 <= cap
