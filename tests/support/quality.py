"""Comparing encodes: frame counts and stream timing read back with ffprobe, PSNR
against the source with ffmpeg's psnr filter (run through the worker's ffmpeg edge)."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

from renderfarm.worker.ffmpeg_exec import ffmpeg_argv, input_args, run_ffmpeg
from tests.support.media import ffprobe


def stream_timing(path: Path) -> dict[str, dict[str, float | None]]:
    """start_time, duration (None where the container does not say) and packet count of
    the first video and the first audio stream."""
    out = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-of", "json",
                          "-show_entries", "stream=codec_type,start_time,duration,nb_read_packets", str(path)],
                         check=True, capture_output=True, text=True).stdout
    timing: dict[str, dict[str, float | None]] = {}
    for stream in json.loads(out)["streams"]:
        timing.setdefault(stream["codec_type"], {
            "start": float(stream["start_time"]) if "start_time" in stream else None,
            "duration": float(stream["duration"]) if "duration" in stream else None,
            "packets": int(stream["nb_read_packets"]),
        })
    return timing


def frame_errors(stats: str) -> list[float]:
    """Per-frame mean squared error, in frame order, from a psnr stats file."""
    errors = [float(value) for value in re.findall(r"mse_avg:([0-9.]+)", stats)]
    if not errors:
        raise ValueError("no frames in the psnr stats")
    return errors


def psnr_of(mse: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def mean_psnr(stats: str) -> float:
    """The whole clip's PSNR from a psnr stats file: from the mean of per-frame MSE
    (as ffmpeg's own summary line does), not the mean of per-frame PSNR."""
    errors = frame_errors(stats)
    return psnr_of(sum(errors) / len(errors))


def frame_psnrs(encoded: Path, source: Path, work: Path) -> list[float]:
    """PSNR of each frame of ``encoded`` against the same-numbered frame of ``source``
    (both retimed to their frame numbers, so container timebases cannot pair the wrong
    frames)."""
    video = next(s for s in ffprobe(encoded)["streams"] if s["codec_type"] == "video")
    stats = work / f"psnr-{encoded.parent.name}-{encoded.stem}.log"
    graph = (f"[0:v]settb=1/25,setpts=N[a];[1:v]scale={video['width']}:{video['height']},settb=1/25,setpts=N[b];"
             f"[a][b]psnr=stats_file={stats}")
    run_ffmpeg(ffmpeg_argv(*input_args(encoded), *input_args(source), "-lavfi", graph, "-f", "null", "-"), what="psnr")
    return [psnr_of(mse) for mse in frame_errors(stats.read_text())]


def whole_psnr(frames: list[float]) -> float:
    """The clip's PSNR from per-frame PSNRs (through the mean MSE)."""
    return psnr_of(sum(255 ** 2 / 10 ** (p / 10) if p != math.inf else 0.0 for p in frames) / len(frames))


def psnr_against(encoded: Path, source: Path, work: Path) -> float:
    """PSNR of the whole of ``encoded`` against ``source``, frame by frame in order."""
    return whole_psnr(frame_psnrs(encoded, source, work))


def assert_chunked_matches_single(chunked: Path, single: Path, source: Path, work: Path) -> dict[str, float]:
    """The chunked encode's picture against the single pass's, both against the source.

    One-sided: a chunk starts on a keyframe, so a chunked encode may score a little
    above the single pass; never more than 0.5 dB below it. Every frame must also pair
    with its own source frame: a frame lost or doubled at a chunk boundary shifts all
    that follows and scores under 20 dB (a clean encode's worst frame here is ~27 dB)."""
    chunked_frames, single_frames = frame_psnrs(chunked, source, work), frame_psnrs(single, source, work)
    figures = {"psnr_chunked": whole_psnr(chunked_frames), "psnr_single": whole_psnr(single_frames),
               "worst_frame_chunked": min(chunked_frames), "worst_at_chunked": chunked_frames.index(min(chunked_frames)),
               "worst_frame_single": min(single_frames), "worst_at_single": single_frames.index(min(single_frames))}
    assert len(chunked_frames) == len(single_frames), figures
    assert figures["psnr_single"] > 30, figures
    assert figures["psnr_chunked"] >= figures["psnr_single"] - 0.5, figures
    assert figures["worst_frame_chunked"] >= 20, figures
    return figures
