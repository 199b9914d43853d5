"""What a workload gets to do its work: the job, its input on disk, where to write."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from renderfarm.core.jobs import Job, OutputRef
from renderfarm.core.settings import Settings
from renderfarm.worker.errors import JobCancelled


@dataclass
class JobContext:
    job: Job
    params: BaseModel
    settings: Settings
    input_path: Path  # a local, readable file (downloaded first for http inputs)
    work_dir: Path  # scratch space, removed after the job
    output_dir: Path  # final outputs live here: <data_dir>/outputs/<job id>/
    report: Callable[[float, str, str], None]  # (progress 0-100, stage, message)
    is_cancelled: Callable[[], bool]
    _last_check: float = field(default=0.0)
    _cancel_check_interval_s: float = 0.5

    def progress(self, percent: float, stage: str = "", message: str = "") -> None:
        """Report progress; raises JobCancelled if the job was cancelled meanwhile."""
        self.report(max(0.0, min(100.0, percent)), stage, message)
        self.raise_if_cancelled()

    def raise_if_cancelled(self) -> None:
        now = time.monotonic()
        if now - self._last_check < self._cancel_check_interval_s:
            return
        self._last_check = now
        if self.is_cancelled():
            raise JobCancelled(self.job.id)

    def temp_output(self, name: str) -> Path:
        """A temporary path in the output folder; publish it with ``publish``."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        return self.output_dir / f".{name}.tmp-{os.getpid()}"

    def publish(self, temp: Path, name: str, media_type: str | None = None) -> OutputRef:
        """Rename a finished temporary file to its final name (atomic on one filesystem),
        so a retried job overwrites cleanly and readers never see half a file."""
        final = self.output_dir / name
        os.replace(temp, final)
        return OutputRef(name=name, uri=final.as_uri(), media_type=media_type, size_bytes=final.stat().st_size)


Handler = Callable[[JobContext], "Any"]
