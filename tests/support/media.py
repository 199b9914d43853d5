"""Test media made on the spot with ffmpeg's lavfi sources (no downloads, no fixtures)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def make_clip(path: Path, *, duration: float = 2.0, width: int = 320, height: int = 240, fps: int = 25,
              audio: bool = True, video: bool = True, source: str = "testsrc2") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        args += ["-f", "lavfi", "-i", f"{source}=size={width}x{height}:rate={fps}:duration={duration}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={duration}"]
    if video:
        args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-b:a", "96k"]
    args += ["-t", str(duration), str(path)]
    subprocess.run(args, check=True)
    return path


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def stream(info: dict, codec_type: str) -> dict | None:
    return next((s for s in info["streams"] if s["codec_type"] == codec_type), None)


def make_cut_clip_with_speech(path: Path, speech_wav: Path, *, sources: list[str], frames_each: int,
                              width: int = 320, height: int = 180, fps: int = 25) -> Path:
    """Video of ``sources`` (lavfi, each looking nothing like its neighbours) joined by
    hard cuts every ``frames_each`` frames, with ``speech_wav`` as its audio (cut or
    padded to the video's length)."""
    return _cut_clip(path, speech_wav, list(sources), [frames_each] * len(sources), width, height, fps,
                     pad_audio=True)


def _cut_clip(path: Path, speech_wav: Path, sources: list[str], lengths: list[int], width: int, height: int,
              fps: int, *, pad_audio: bool) -> Path:
    """Shots of ``lengths`` frames from the lavfi ``sources`` joined by hard cuts, with the
    speech as AAC audio: padded or cut to the video (``pad_audio``) or as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    graph, labels = [], ""
    for i, (source, frames) in enumerate(zip(sources, lengths)):
        separator = ":" if "=" in source else "="
        args += ["-f", "lavfi", "-i", f"{source}{separator}size={width}x{height}:rate={fps}"]
        graph.append(f"[{i}:v]trim=end_frame={frames},setpts=PTS-STARTPTS,format=yuv420p,setsar=1[v{i}]")
        labels += f"[v{i}]"
    graph.append(f"{labels}concat=n={len(sources)}:v=1:a=0[out]")
    args += ["-i", str(speech_wav)]
    audio = ["-map", f"{len(sources)}:a:0"]
    duration = sum(lengths) / fps
    if pad_audio:
        graph.append(f"[{len(sources)}:a]apad,atrim=end={duration}[aout]")
        audio = ["-map", "[aout]"]
    args += ["-filter_complex", ";".join(graph), "-map", "[out]", *audio, "-c:v", "libx264", "-preset", "ultrafast",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k"]
    args += (["-t", str(duration)] if pad_audio else []) + [str(path)]
    subprocess.run(args, check=True)
    return path


# Lavfi sources that look nothing like each other: a cut between two is a hard cut.
CUT_SOURCES = ("testsrc2", "smptebars", "mandelbrot", "rgbtestsrc", "cellauto")


def make_speech_cut_clip(path: Path, speech_wav: Path, shots: int = 3, width: int = 320, height: int = 180,
                         fps: int = 25) -> tuple[Path, list[int]]:
    """A video of ``shots`` hard-cut shots as long as the speech, with the speech as its
    audio (AAC). Returns the clip and the first frame of every shot after the first."""
    duration = float(ffprobe(speech_wav)["format"]["duration"])
    total = int(duration * fps)
    lengths = [total // shots + (1 if i < total % shots else 0) for i in range(shots)]
    sources = [CUT_SOURCES[i % len(CUT_SOURCES)] for i in range(shots)]
    _cut_clip(path, speech_wav, sources, lengths, width, height, fps, pad_audio=False)
    cuts, start = [], 0
    for frames in lengths[:-1]:
        start += frames
        cuts.append(start)
    return path, cuts
