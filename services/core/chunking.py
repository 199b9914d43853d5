"""Chunked transcode's pure decisions: where to cut a video into chunks, and in which
order to encode them. Plain data in and out; the cpu pool's chunk kinds and the
workflow engine (which expands a ``chunk_split`` result into one ``chunk_encode``
step per chunk) both use them.

Cuts fall only on keyframes: chunks are split with stream copy, and a copied chunk
must start with a frame that decodes on its own.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

# A chunk is never shorter than this fraction of the target, except a whole video
# that is shorter; the last chunk may stretch to 1.5 targets instead of leaving a stub.
MIN_FRACTION = 0.5
TAIL_FRACTION = 1.5
# Chunks per split at most: each is a workflow step, and the workflow's whole record
# is rewritten at every step's end. 200 chunks keep a 200-worker pool busy.
DEFAULT_MAX_CHUNKS = 200
MAX_CHUNKS = 1000


def plan_cuts(candidates: Iterable[float], duration_s: float, target_s: float) -> list[float]:
    """Start times of every chunk after the first, chosen among ``candidates`` (keyframe
    times, seconds from the start): each chunk as close to ``target_s`` as the
    keyframes allow, none shorter than half of it, no stub at the end."""
    if target_s <= 0:
        raise ValueError("target_s must be positive")
    points = sorted({t for t in candidates if 0 < t < duration_s})
    cuts: list[float] = []
    last = 0.0
    while duration_s - last > TAIL_FRACTION * target_s:
        goal = last + target_s
        options = [t for t in points if t >= last + MIN_FRACTION * target_s]
        if not options:
            break
        pick = min(options, key=lambda t: (abs(t - goal), t))
        if duration_s - pick < MIN_FRACTION * target_s:
            break
        cuts.append(pick)
        last = pick
    return cuts


def plan_cuts_capped(candidates: Iterable[float], duration_s: float, target_s: float, max_chunks: int) -> list[float]:
    """``plan_cuts`` with at most ``max_chunks`` chunks: a long source gets longer chunks
    rather than more of them."""
    if max_chunks < 1:
        raise ValueError("max_chunks must be at least 1")
    points = sorted(set(candidates))
    target = max(target_s, duration_s / max_chunks)
    while True:
        cuts = plan_cuts(points, duration_s, target)
        if len(cuts) < max_chunks:
            return cuts
        target *= 1.05 * (len(cuts) + 1) / max_chunks


def chunk_spans(cuts: Sequence[float], duration_s: float) -> list[tuple[float, float]]:
    """(start, end) of every chunk: the cuts tile [0, duration]."""
    bounds = [0.0, *cuts, duration_s]
    return list(zip(bounds[:-1], bounds[1:]))


def frames_in_spans(frame_times: Iterable[float], spans: Sequence[tuple[float, float]]) -> list[int]:
    """How many frames start in each span (the last span takes everything after its start)."""
    counts = [0] * len(spans)
    starts = [start for start, _ in spans]
    for t in frame_times:
        position = 0
        while position + 1 < len(starts) and t >= starts[position + 1] - 1e-6:
            position += 1
        counts[position] += 1
    return counts


def scene_keyframes(keyframe_times: Iterable[float], scene_times: Iterable[float], tolerance_s: float) -> list[float]:
    """The keyframes that sit on a detected scene cut (within ``tolerance_s``, about half a frame)."""
    scenes = sorted(scene_times)
    return [k for k in keyframe_times if any(abs(k - s) <= tolerance_s for s in scenes)]


def longest_first(chunks: Sequence[dict[str, Any]]) -> list[int]:
    """Chunk indexes, longest first (ties: lower index first): the long ones start early,
    so the last chunk to finish is a short one and workers are not left idle."""
    return [c["index"] for c in sorted(chunks, key=lambda c: (-(c["end_s"] - c["start_s"]), c["index"]))]
