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
    is_cancelled: Callable[[], bool]  # also true once this run is no longer the job's live attempt
    # Asks the job store, right before an output is published, whether this run is
    # still the live attempt: a stale run never replaces another attempt's outputs.
    is_live: Callable[[], bool] = field(default=lambda: True)
    token: str = ""  # the attempt token; names this run's temporary files
    # The S3 client of the storage edge when outputs go to object storage (None: the filesystem).
    storage: Any = None
    _last_check: float = field(default=0.0)
    _cancel_check_interval_s: float = 0.5
    # Files this run wrote: temporary paths, and published paths with their inode,
    # so a cleanup removes its own files and never a later attempt's.
    _temps: set[Path] = field(default_factory=set)
    _published: dict[Path, int] = field(default_factory=dict)
    _uploaded: dict[str, str] = field(default_factory=dict)  # s3 uri -> the ETag this run wrote

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
        temp = self.output_dir / f".{name}.tmp-{self.token or os.getpid()}"
        self._temps.add(temp)
        return temp

    def publish(self, temp: Path, name: str, media_type: str | None = None) -> OutputRef:
        """Rename a finished temporary file to its final name (atomic on one filesystem),
        so a retried job overwrites cleanly and readers never see half a file. A run
        that is no longer the live attempt publishes nothing (JobCancelled)."""
        if self.is_cancelled() or not self.is_live():
            temp.unlink(missing_ok=True)
            raise JobCancelled(self.job.id)
        if self.storage is not None:
            return self._upload(temp, name, media_type)
        final = self.output_dir / name
        os.replace(temp, final)
        self._temps.discard(temp)
        stat = final.stat()
        self._published[final] = stat.st_ino
        return OutputRef(name=name, uri=final.as_uri(), media_type=media_type, size_bytes=stat.st_size)

    def _upload(self, temp: Path, name: str, media_type: str | None) -> OutputRef:
        """Multipart-upload the finished file to the job's output key (a retry overwrites
        the same key); a cancel or a lost lease mid-upload aborts it (JobCancelled)."""
        from renderfarm.core.storage import StorageError, Stopped, publish_s3_output
        from renderfarm.worker.errors import StorageFailure, TransientError

        try:
            output, etag = publish_s3_output(temp, self.job.tenant, self.job.id, name, media_type,
                                       should_stop=lambda: self.is_cancelled() or not self.is_live())
        except Stopped:
            raise JobCancelled(self.job.id) from None
        except StorageError as exc:
            if exc.reason == "unavailable":
                raise TransientError(str(exc)) from None
            raise StorageFailure(str(exc)) from None
        finally:
            temp.unlink(missing_ok=True)
            self._temps.discard(temp)
        self._uploaded[output.uri] = etag
        return output

    def remove_own_files(self, *, published_too: bool) -> None:
        """Remove this run's temporary files and, if asked, the outputs it published
        that are still its own (same inode: no later attempt replaced them)."""
        for temp in self._temps:
            temp.unlink(missing_ok=True)
        self._temps.clear()
        if published_too:
            for path, inode in self._published.items():
                try:
                    if path.stat().st_ino == inode:
                        path.unlink()
                except FileNotFoundError:
                    pass
            self._published.clear()
            for uri, etag in self._uploaded.items():
                self.storage.delete_if_etag(uri, etag)  # a later attempt's object stays
            self._uploaded.clear()
            try:
                self.output_dir.rmdir()  # only if nothing else is left in it
            except OSError:
                pass


Handler = Callable[[JobContext], "Any"]
