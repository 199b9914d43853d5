"""How a cost grows with the work (pure): flat, log or linear, fitted to a few points.

Each model is fitted by least squares (flat: y = a; log: y = a + b·ln n; linear:
y = a + b·n) and scored by its largest relative error over the points. The simplest
model whose error is within ``tolerance`` wins, so noise between equal values reads
as flat, not as a tiny slope. A figure that ends no higher than it started (within
``tolerance``) did not grow, whatever happened in between: flat.
"""

from __future__ import annotations

import math
from typing import Sequence

MODELS = ("flat", "log", "linear")


def _fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / var if var else 0.0
    return mean_y - slope * mean_x, slope


def _max_relative_error(predicted: Sequence[float], ys: Sequence[float]) -> float:
    scale = max(abs(y) for y in ys) or 1.0
    return max(abs(p - y) for p, y in zip(predicted, ys)) / scale


def classify_growth(ns: Sequence[float], ys: Sequence[float], tolerance: float = 0.15) -> dict[str, object]:
    """{"growth": flat|log|linear, "errors": {model: max relative error}, "ratio": y(last)/y(first)}."""
    if len(ns) != len(ys) or len(ns) < 2 or any(not math.isfinite(y) for y in ys):
        return {"growth": "n/a", "errors": {}, "ratio": math.nan}
    errors: dict[str, float] = {}
    ratio = ys[-1] / ys[0] if ys[0] else math.inf
    mean = sum(ys) / len(ys)
    errors["flat"] = _max_relative_error([mean] * len(ys), ys)
    logs = [math.log(n) for n in ns]
    a, b = _fit(logs, ys)
    errors["log"] = _max_relative_error([a + b * x for x in logs], ys)
    a, b = _fit(ns, ys)
    errors["linear"] = _max_relative_error([a + b * x for x in ns], ys)
    growth = next((m for m in MODELS if errors[m] <= tolerance), min(errors, key=errors.get))
    if ratio <= 1 + tolerance:
        growth = "flat"
    return {"growth": growth, "errors": {m: round(e, 3) for m, e in errors.items()}, "ratio": round(ratio, 3)}
