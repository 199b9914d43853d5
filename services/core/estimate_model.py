"""Duration estimates, the maths (pure): learning how long jobs take, and predicting.

A kind's run time is modelled as a line, ``seconds = overhead + rate × media_s``:
``rate`` is seconds of work per second of media, ``overhead`` what every job pays
whatever its length (process start, probing, writing). Both are learned by
exponentially decayed least squares over finished jobs, so a pool whose machines or
settings change forgets the old behaviour after a few dozen jobs (``DECAY``), and the
record stays six numbers however many jobs ran. A kind whose jobs state no media
duration (thumbnail, report) learns only the overhead: its mean seconds per job.

Nothing here does I/O; renderfarm.core.estimates reads and writes these records in Redis.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping

# Weight kept by the past at each new sample: a sample 20 jobs old counts ~1/3, 50 jobs old ~8 %.
DECAY = 0.95
# Below this spread of media durations (s²) the line is not fitted: the samples only
# say how long a job of about that length takes, so the prediction scales their mean.
MIN_MEDIA_VARIANCE = 0.25
# Progress below this is mostly start-up (fetch, probe): the learned prior counts alone.
MIN_PROGRESS_FOR_RATE = 5.0

HEIGHT_BUCKETS = (360, 720, 1080, 2160)


@dataclass(frozen=True)
class Fit:
    """Decayed sums of samples (x = media seconds, y = run seconds) and their weight."""

    w: float = 0.0
    x: float = 0.0
    y: float = 0.0
    xx: float = 0.0
    xy: float = 0.0
    n: int = 0  # samples seen (not decayed): how much to trust the fit

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> "Fit | None":
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(**{name: data[name] for name in ("w", "x", "y", "xx", "xy", "n")})
        except (ValueError, KeyError, TypeError):
            return None  # an unreadable record is as good as none: it is relearned


def update(fit: Fit | None, media_s: float | None, seconds: float, decay: float = DECAY) -> Fit:
    """The fit with one more finished job. ``media_s`` None (or not positive): a job
    with no media length, which teaches only the per-job overhead."""
    fit = fit or Fit()
    x = media_s if media_s is not None and media_s > 0 else 0.0
    y = max(0.0, float(seconds))
    return Fit(w=fit.w * decay + 1.0, x=fit.x * decay + x, y=fit.y * decay + y, xx=fit.xx * decay + x * x,
               xy=fit.xy * decay + x * y, n=fit.n + 1)


def predict(fit: Fit | None, media_s: float | None) -> float | None:
    """Expected run seconds for a job of ``media_s`` media seconds (None: unknown
    length, the mean job), or None when nothing was learned yet."""
    if fit is None or fit.w <= 0:
        return None
    mean_y = fit.y / fit.w
    if media_s is None or media_s <= 0 or fit.x <= 0:
        return mean_y
    mean_x = fit.x / fit.w
    variance = fit.xx / fit.w - mean_x * mean_x
    if variance < MIN_MEDIA_VARIANCE:
        return mean_y * media_s / mean_x  # one length seen: scale the mean by the length
    rate = (fit.xy / fit.w - mean_x * mean_y) / variance
    overhead = mean_y - rate * mean_x
    if rate < 0:  # longer media never takes less work: fall back to the mean job
        return mean_y
    if overhead < 0:  # a line through the origin instead (no negative overhead)
        return media_s * fit.xy / fit.xx
    return overhead + rate * media_s


def rate_and_overhead(fit: Fit | None) -> tuple[float | None, float | None]:
    """(seconds of work per media second, seconds per job) as the fit stands; for display."""
    if fit is None or fit.w <= 0:
        return None, None
    at_zero = predict(fit, None) if fit.x <= 0 else None
    if at_zero is not None:
        return None, at_zero
    base = predict(fit, 1e-9) or 0.0
    one = predict(fit, 1.0 + 1e-9) or 0.0
    return max(0.0, one - base), max(0.0, base)


def height_bucket(height: int | None) -> str:
    if height is None:
        return "src"
    for bound in HEIGHT_BUCKETS:
        if height <= bound:
            return f"h{bound}"
    return "hmax"


def shape_of(kind: str, params: Mapping[str, Any]) -> str:
    """The shape a job's cost depends on beyond its length, in a few buckets (so the
    records stay bounded): transcodes by rendition count and tallest output, chunk
    encodes by output height. Other kinds: one shape."""
    if kind == "transcode":
        renditions = params.get("renditions") or []
        heights = [r.get("height") for r in renditions if isinstance(r, Mapping)]
        tallest = max((h for h in heights if isinstance(h, int)), default=None)
        return f"{min(len(renditions), 4)}x{height_bucket(tallest)}"
    if kind == "chunk_encode":
        height = params.get("height")
        return height_bucket(height if isinstance(height, int) else None)
    return "*"


def media_seconds(metadata: Mapping[str, Any] | None) -> float | None:
    """The input's media duration as a job's result states it: transcode and
    package_hls under ``input``, the others at the top (``duration`` or ``duration_s``)."""
    if not metadata:
        return None
    candidates: list[Any] = [metadata.get("media_duration_s")]
    nested = metadata.get("input")
    if isinstance(nested, Mapping):
        candidates.append(nested.get("duration"))
    candidates += [metadata.get("duration"), metadata.get("duration_s")]
    for value in candidates:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            return float(value)
    return None


def running_duration(prior: float | None, elapsed_s: float, progress: float) -> float | None:
    """A running job's expected total: the prior, pulled towards what its progress
    says (elapsed / fraction done) as progress grows; never less than elapsed."""
    elapsed_s = max(0.0, elapsed_s)
    if progress >= MIN_PROGRESS_FOR_RATE:
        done = min(progress, 100.0) / 100.0
        by_progress = elapsed_s / done
        estimate = by_progress if prior is None else done * by_progress + (1 - done) * prior
    else:
        estimate = prior
    if estimate is None:
        return None
    return max(estimate, elapsed_s)


def start_in(ahead: int, running: int, slots: int, mean_job_s: float | None) -> float | None:
    """Seconds until a waiting job starts: ``ahead`` jobs go before it and ``running``
    hold slots now, on a pool with ``slots`` job slots. Fluid approximation: the work
    ahead (the waiting jobs whole, the running ones half done on average) shared by
    every slot. None: no live slot, or nothing learned about the pool yet."""
    if slots <= 0:
        return None
    if ahead + running < slots:
        return 0.0  # a slot is free for it
    if mean_job_s is None:
        return None
    return (ahead * mean_job_s + running * mean_job_s / 2) / slots


def critical_path(steps: Mapping[str, tuple[Iterable[str], float | None]]) -> float | None:
    """The longest chain of step seconds through a DAG (``steps``: name -> (needs,
    seconds)); None if any step has no estimate."""
    memo: dict[str, float] = {}
    for name in steps:
        if steps[name][1] is None:
            return None

    def finish(name: str, trail: frozenset[str]) -> float:
        if name in memo:
            return memo[name]
        needs, seconds = steps[name]
        before = [finish(need, trail | {name}) for need in needs if need in steps and need not in trail]
        memo[name] = (max(before) if before else 0.0) + float(seconds or 0.0)
        return memo[name]

    return max((finish(name, frozenset()) for name in steps), default=0.0)
