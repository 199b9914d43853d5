"""Errors a workload raises; each maps to a job error type and a retry decision."""

from __future__ import annotations

from renderfarm.core.jobs import ErrorType


class WorkloadError(Exception):
    error_type: ErrorType = ErrorType.internal


class InvalidMedia(WorkloadError):
    """Missing, corrupt or unsuitable media: fails at once, never retried."""

    error_type = ErrorType.invalid_media


class InvalidInput(WorkloadError):
    """The input reference is not allowed (outside roots, private address…)."""

    error_type = ErrorType.invalid_input


class TransientError(WorkloadError):
    """Worth another attempt (network hiccup, a busy dependency)."""

    error_type = ErrorType.transient


class StorageFailure(WorkloadError):
    """The output store refused the write (credentials, missing bucket, policy)."""

    error_type = ErrorType.storage


class OutOfMemory(WorkloadError):
    error_type = ErrorType.out_of_memory


class JobCancelled(Exception):
    """Raised inside a workload when the job was cancelled while it ran."""
