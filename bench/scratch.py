"""What every bench section's ``run(report)`` starts with: measure in a scratch
folder (under the report's workdir when there is one) that is removed afterwards,
and hand the results either to a plain dict (standalone use) or to bench/run.py's
Report."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable


def measure_in_scratch(report: Any, name: str, measure: Callable[[Path, bool], dict[str, Any]],
                       quick: bool | None = None) -> tuple[dict[str, Any], Any]:
    """(results, the Report to write them to); the Report is None when ``report`` is a
    dict, which then holds the results."""
    quick = bool(getattr(report, "quick", False)) if quick is None else quick
    workdir = Path(tempfile.mkdtemp(prefix=f"rf-bench-{name}-", dir=getattr(report, "workdir", None)))
    try:
        results = measure(workdir, quick)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if isinstance(report, dict):
        report.update(results)
        return results, None
    return results, report
