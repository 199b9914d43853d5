"""What can go wrong at the storage edge, in words a caller can act on."""

from __future__ import annotations

from typing import Literal

Reason = Literal["missing", "no_bucket", "denied", "unavailable", "too_large", "failed"]


class StorageError(Exception):
    """``reason``: missing (no such object), no_bucket, denied (credentials or policy),
    unavailable (worth another attempt), too_large, failed (anything else)."""

    def __init__(self, reason: Reason, message: str):
        super().__init__(message)
        self.reason = reason


class Stopped(Exception):
    """The caller's stop check turned true mid-transfer; the transfer was undone."""
