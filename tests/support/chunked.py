"""The chunked-transcode tests' source clip: five moving hard-cut shots and a tone,
and the rendition both sides of the comparison encode."""

from __future__ import annotations

import subprocess
from pathlib import Path

FPS = 25
SHOT_FRAMES = 100  # hard cuts every 4 s
SHOTS = 5
# Fixed seeds: the same clip on every run, so the comparison is not at the mercy of chance.
MOVING_SOURCES = ("testsrc2", "mandelbrot", "gradients=speed=0.05:seed=3", "testsrc", "life=mold=10:ratio=0.5:seed=7")
FRAME_S = 1 / FPS
RENDITION = {"height": 240, "crf": 23, "preset": "veryfast"}


def make_source(path: Path) -> Path:
    """20 s: five hard-cut shots, a tone, H.264 with B-frames and a 2 s GOP (plus the
    encoder's own keyframes at the cuts). Every shot moves: a still shot (colour bars)
    sends PSNR to 60 dB, where the encoder's rate-control history, which a chunk
    starts without, swings the average by dB that no viewer could see."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    graph, labels = [], ""
    for i in range(SHOTS):
        source = MOVING_SOURCES[i]
        args += ["-f", "lavfi", "-i", f"{source}{':' if '=' in source else '='}size=320x240:rate={FPS}"]
        graph.append(f"[{i}:v]trim=end_frame={SHOT_FRAMES},setpts=PTS-STARTPTS,format=yuv420p,setsar=1[v{i}]")
        labels += f"[v{i}]"
    graph.append(f"{labels}concat=n={SHOTS}:v=1:a=0[out]")
    duration = SHOTS * SHOT_FRAMES / FPS
    args += ["-f", "lavfi", "-i", f"sine=frequency=330:sample_rate=48000:duration={duration}",
             "-filter_complex", ";".join(graph), "-map", "[out]", "-map", f"{SHOTS}:a:0",
             "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(args, check=True)
    return path
