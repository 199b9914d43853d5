"""The Matroska head reader (pure) on files real ffmpeg wrote, and on what it must refuse."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from renderfarm.worker.matroska import HEAD_BYTES, NotMatroska, read_file_head, read_head


def _write(path: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25:duration=2.4",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=2.4",
                    *args, str(path)], check=True)
    return path


def test_a_video_only_chunk_has_one_h264_track_its_size_and_duration(tmp_path):
    head = read_file_head(_write(tmp_path / "chunk.mkv", "-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast"))
    assert head.doc_type == "matroska"
    assert [(t.type, t.codec, t.width, t.height) for t in head.tracks] == [("video", "h264", 320, 180)]
    assert head.duration_s == pytest.approx(2.4, abs=0.05)


def test_audio_beside_the_video_is_a_second_track(tmp_path):
    head = read_file_head(_write(tmp_path / "both.mkv", "-map", "0:v", "-map", "1:a", "-c:v", "libx264",
                                 "-preset", "ultrafast", "-c:a", "aac"))
    assert [t.type for t in head.tracks] == ["video", "audio"]
    assert head.tracks[1].codec is None and head.tracks[1].codec_id == "A_AAC"


def test_an_mp4_a_concat_list_and_a_cut_head_are_refused(tmp_path):
    mp4 = _write(tmp_path / "clip.mp4", "-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast")
    with pytest.raises(NotMatroska):
        read_file_head(mp4)
    with pytest.raises(NotMatroska):
        read_head(b"ffconcat version 1.0\nfile /etc/passwd\n")
    whole = _write(tmp_path / "chunk.mkv", "-map", "0:v", "-c:v", "libx264", "-preset", "ultrafast").read_bytes()
    assert len(whole) > 200
    with pytest.raises(NotMatroska):
        read_head(whole[:120])  # the EBML header, then a segment whose tracks were not read
    assert read_head(whole[:HEAD_BYTES]).tracks  # the head ffmpeg writes fits in what is read
