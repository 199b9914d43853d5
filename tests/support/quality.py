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


def mean_psnr(stats: str) -> float:
    """The whole clip's PSNR from a psnr stats file: from the mean of per-frame MSE
    (as ffmpeg's own summary line does), not the mean of per-frame PSNR."""
    errors = [float(value) for value in re.findall(r"mse_avg:([0-9.]+)", stats)]
    if not errors:
        raise ValueError("no frames in the psnr stats")
    mse = sum(errors) / len(errors)
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def psnr_against(encoded: Path, source: Path, work: Path) -> float:
    """PSNR of ``encoded`` against ``source``, frame by frame in order (both retimed to
    their frame numbers, so container timebases cannot pair the wrong frames)."""
    video = next(s for s in ffprobe(encoded)["streams"] if s["codec_type"] == "video")
    stats = work / f"psnr-{encoded.parent.name}-{encoded.stem}.log"
    graph = (f"[0:v]settb=1/25,setpts=N[a];[1:v]scale={video['width']}:{video['height']},settb=1/25,setpts=N[b];"
             f"[a][b]psnr=stats_file={stats}")
    run_ffmpeg(ffmpeg_argv(*input_args(encoded), *input_args(source), "-lavfi", graph, "-f", "null", "-"), what="psnr")
    return mean_psnr(stats.read_text())
