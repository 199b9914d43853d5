"""ffmpeg's -progress stream parsed into times and percentages (pure functions)."""

from __future__ import annotations

import pytest

from renderfarm.worker.errors import InvalidMedia
from renderfarm.worker.ffmpeg_exec import (
    ProgressParser,
    ProgressUpdate,
    failure,
    parse_progress_lines,
    progress_percent,
)


def block(out_time_us: str | None, progress: str = "continue", *, out_time_ms: str | None = None, out_time: str | None = None) -> list[str]:
    """One block as ffmpeg 5/6 writes it."""
    lines = ["frame=12", "fps=0.00", "stream_0_0_q=28.0", "bitrate= 351.2kbits/s", "total_size=48"]
    if out_time_us is not None:
        lines.append(f"out_time_us={out_time_us}")
    lines.append(f"out_time_ms={out_time_ms if out_time_ms is not None else out_time_us}")
    lines.append(f"out_time={out_time if out_time is not None else '00:00:00.000000'}")
    lines += ["dup_frames=0", "drop_frames=0", "speed=1.5x", f"progress={progress}"]
    return [line + "\n" for line in lines]


def test_each_block_yields_its_output_time_in_seconds():
    lines = block("500000") + block("1250000") + block("2000000", "end")
    updates = parse_progress_lines(lines)
    assert [u.out_time_s for u in updates] == [0.5, 1.25, 2.0]
    assert [u.ended for u in updates] == [False, False, True]


def test_unknown_time_before_the_first_packet_is_none():
    updates = parse_progress_lines(block("N/A", out_time="N/A"))
    assert updates == [ProgressUpdate(out_time_s=None, ended=False, frames=12)]


def test_each_block_says_the_frames_written_and_none_without_video():
    lines = block("500000") + [line.replace("frame=12", "frame=3000") for line in block("2000000", "end")]
    assert [u.frames for u in parse_progress_lines(lines)] == [12, 3000]
    audio_only = [line for line in block("2000000", "end") if not line.startswith("frame=")]
    assert parse_progress_lines(audio_only)[0].frames is None


def test_out_time_ms_is_read_as_microseconds_when_out_time_us_is_missing():
    # ffmpeg's out_time_ms has always carried microseconds despite its name.
    lines = block(None, out_time_ms="1500000")
    assert parse_progress_lines(lines)[0].out_time_s == pytest.approx(1.5)


def test_clock_form_is_the_last_fallback():
    lines = ["out_time=00:01:02.500000\n", "progress=continue\n"]
    assert parse_progress_lines(lines)[0].out_time_s == pytest.approx(62.5)


def test_negative_times_at_the_start_clamp_to_zero():
    lines = ["out_time_us=-23220\n", "out_time=-00:00:00.023220\n", "progress=continue\n"]
    assert parse_progress_lines(lines)[0].out_time_s == 0.0


def test_an_incomplete_trailing_block_is_not_reported():
    lines = block("1000000") + ["frame=30\n", "out_time_us=1200000\n"]
    assert [u.out_time_s for u in parse_progress_lines(lines)] == [1.0]


def test_blank_and_junk_lines_are_ignored():
    lines = ["\n", "garbage without equals\n", "out_time_us=750000\n", "  \n", "progress=continue\n"]
    assert [u.out_time_s for u in parse_progress_lines(lines)] == [0.75]


def test_incremental_parser_remembers_the_last_known_time():
    parser = ProgressParser()
    for line in block("900000"):
        parser.feed(line)
    update = None
    for line in block("N/A", out_time="N/A"):
        update = parser.feed(line) or update
    assert update == ProgressUpdate(out_time_s=None, ended=False, frames=12)
    assert parser.last_time_s == pytest.approx(0.9)


def test_percent_is_time_over_duration():
    assert progress_percent(ProgressUpdate(1.0, False), 4.0) == pytest.approx(25.0)


def test_percent_never_goes_backwards_and_stays_below_100_until_the_end():
    assert progress_percent(ProgressUpdate(1.0, False), 4.0, previous=40.0) == 40.0
    assert progress_percent(ProgressUpdate(None, False), 4.0, previous=12.0) == 12.0
    assert progress_percent(ProgressUpdate(4.2, False), 4.0) < 100.0
    assert progress_percent(ProgressUpdate(3.9, True), 4.0) == 100.0


def test_percent_without_a_known_duration_waits_for_the_end():
    assert progress_percent(ProgressUpdate(3.0, False), None) == 0.0
    assert progress_percent(ProgressUpdate(3.0, True), None) == 100.0


def test_unreadable_input_in_stderr_is_invalid_media_and_anything_else_a_runtime_error():
    unreadable = failure("transcode", 1, "[mov,mp4 @ 0x1] moov atom not found\nx.mp4: Invalid data found when processing input\n")
    assert isinstance(unreadable, InvalidMedia)
    assert "moov atom not found" in str(unreadable)
    other = failure("transcode", 1, "Unknown encoder 'libfoo'\n")
    assert type(other) is RuntimeError
    assert "libfoo" in str(other) and "exit status 1" in str(other)
