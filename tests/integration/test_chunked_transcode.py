"""Chunked transcode as ordinary jobs on a real cpu worker: chunk_split, one
chunk_encode per chunk (longest first), chunk_concat; the result is held against a
single-pass transcode job with the same settings."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from renderfarm.core.jobs import JobStatus
from tests.support.farm import open_store, output_path, run_job
from tests.support.media import ffprobe
from tests.support.procs import start_worker
from tests.support.chunked import FPS, FRAME_S, RENDITION, SHOT_FRAMES, SHOTS, make_source
from tests.support.quality import assert_chunked_matches_single, stream_timing

def keyframe_times(path: Path) -> list[float]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags",
                          "-of", "csv=p=0", str(path)], check=True, capture_output=True, text=True).stdout
    return sorted(float(line.split(",")[0]) for line in out.splitlines() if "K" in line.split(",")[1])


@pytest.fixture
def farm(rf_settings_env, data_dir):
    worker = start_worker(rf_settings_env, pool="cpu")
    yield open_store(), worker
    worker.stop(signal.SIGTERM, 30)


def test_chunked_transcode_matches_a_single_pass_encode(farm, data_dir, tmp_path):
    store, worker = farm
    source = make_source(data_dir / "inputs" / "source.mp4")
    source_timing = stream_timing(source)

    split = run_job(store, worker, "chunk_split", source, {"chunk_duration_s": 4})
    chunks = split.result.metadata["chunks"]
    assert [o.name for o in split.result.outputs] == [f"chunk_{i:04d}.mkv" for i in range(len(chunks))]
    assert len(chunks) >= 3 and [c["index"] for c in chunks] == list(range(len(chunks)))
    assert sum(c["frames"] for c in chunks) == source_timing["video"]["packets"] == SHOTS * SHOT_FRAMES
    keyframes = keyframe_times(source)
    for chunk, following in zip(chunks, chunks[1:]):
        assert chunk["end_s"] == following["start_s"]
        assert min(abs(following["start_s"] - k) for k in keyframes) < 1e-3, "a cut off a keyframe"
    for chunk in chunks:
        info = ffprobe(output_path(split, f"chunk_{chunk['index']:04d}.mkv"))
        assert [s["codec_type"] for s in info["streams"]] == ["video"], "chunks are video only"
        assert stream_timing(output_path(split, f"chunk_{chunk['index']:04d}.mkv"))["video"]["packets"] == chunk["frames"]
    assert split.result.metadata["order"][0] == max(chunks, key=lambda c: c["end_s"] - c["start_s"])["index"]

    encoded = {}
    for index in split.result.metadata["order"]:
        encoded[index] = run_job(store, worker, "chunk_encode", chunks[index]["uri"], {**RENDITION, "threads": 1})
        assert encoded[index].result.metadata["frames"] == chunks[index]["frames"]
        # x264 writes its settings into the stream: one encoder thread, as the bench pins one core.
        assert b" threads=1 " in output_path(encoded[index], "encoded.mkv").read_bytes()[:65536]
    joined = run_job(store, worker, "chunk_concat", source,
                     {"chunks": [encoded[i].result.outputs[0].uri for i in range(len(chunks))], "name": "240p"})
    # Both sides one x264 thread: x264's own thread count follows the machine's cores,
    # and frame threads alone move PSNR by most of a dB (0.79 dB on an 8-core runner).
    single = run_job(store, worker, "transcode", source, {"renditions": [{**RENDITION, "threads": 1}]})

    chunked_path, single_path = output_path(joined, "240p.mp4"), output_path(single, "240p.mp4")
    assert b" threads=1 " in single_path.read_bytes()[:200_000], "the single pass ran with one x264 thread"
    chunked, reference = stream_timing(chunked_path), stream_timing(single_path)
    assert chunked["video"]["packets"] == reference["video"]["packets"] == SHOTS * SHOT_FRAMES
    assert chunked["video"]["duration"] == pytest.approx(reference["video"]["duration"], abs=FRAME_S)
    for kind in ("video", "audio"):
        assert chunked[kind]["start"] == pytest.approx(reference[kind]["start"], abs=0.020), kind
    assert chunked["audio"]["duration"] == pytest.approx(reference["audio"]["duration"], abs=0.020)
    assert chunked["audio"]["duration"] == pytest.approx(source_timing["audio"]["duration"], abs=0.030)

    figures = assert_chunked_matches_single(chunked_path, single_path, source, tmp_path)
    print(json.dumps({"chunks": len(chunks), **{k: round(v, 3) for k, v in figures.items()},
                      "bytes_chunked": chunked_path.stat().st_size, "bytes_single": single_path.stat().st_size}))


def test_split_on_scenes_cuts_only_where_a_shot_starts(farm, data_dir):
    store, worker = farm
    source = make_source(data_dir / "inputs" / "source.mp4")
    split = run_job(store, worker, "chunk_split", source, {"chunk_duration_s": 2, "split_on": "scenes"})
    assert split.result.metadata["split_on"] == "scenes"
    starts = [c["start_s"] for c in split.result.metadata["chunks"][1:]]
    shot_starts = [n * SHOT_FRAMES / FPS for n in range(1, SHOTS)]
    assert starts and all(min(abs(s - cut) for cut in shot_starts) < 1e-3 for s in starts), starts
    assert [c["frames"] for c in split.result.metadata["chunks"]] == [
        round((c["end_s"] - c["start_s"]) * FPS) for c in split.result.metadata["chunks"]]


def test_concat_reads_only_video_chunks_from_the_farm(farm, data_dir):
    """The concat list is the worker's own: a chunk reference outside the allowed roots,
    or a concat list disguised as a chunk, fails the job before ffmpeg joins anything."""
    store, worker = farm
    source = make_source(data_dir / "inputs" / "source.mp4")
    outside = data_dir.parent / "outside" / "secret.mkv"
    outside.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), "-an", "-c", "copy",
                    str(outside)], check=True)
    refused = run_job(store, worker, "chunk_concat", source, {"chunks": [outside.as_uri()]}, expect=JobStatus.failed)
    assert refused.error.type == "invalid_input" and "outside" in refused.error.message

    disguised = data_dir / "inputs" / "chunk.mkv"
    disguised.write_text(f"ffconcat version 1.0\nfile {outside}\n")
    refused = run_job(store, worker, "chunk_concat", source, {"chunks": [disguised.as_uri()]}, expect=JobStatus.failed)
    assert refused.error.type == "invalid_media", refused.error
