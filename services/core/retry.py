"""Retry policy (pure): which failures are retried, and after how long."""

from __future__ import annotations

from dataclasses import dataclass

from renderfarm.core.jobs import ErrorType

# Only these are worth another attempt; bad media or bad params fail the same way
# every time and go straight to the dead-letter list.
RETRYABLE_ERROR_TYPES = frozenset({ErrorType.transient, ErrorType.timeout, ErrorType.out_of_memory, ErrorType.worker_lost})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    base_delay_s: float = 2.0
    max_delay_s: float = 300.0
    jitter: float = 0.5  # fraction of the delay drawn at random, +/-


def max_attempts(policy: RetryPolicy) -> int:
    """Attempts a job gets between manual retries: the first plus its retries."""
    return 1 + policy.max_retries


def should_retry(policy: RetryPolicy, error_type: str, retries_done: int) -> bool:
    return error_type in RETRYABLE_ERROR_TYPES and retries_done < policy.max_retries


def retry_delay(policy: RetryPolicy, retries_done: int, unit_random: float) -> float:
    """Exponential backoff with jitter; ``unit_random`` in [0, 1) keeps this pure."""
    delay = min(policy.max_delay_s, policy.base_delay_s * (2**retries_done))
    spread = delay * policy.jitter
    return max(0.0, delay - spread + 2 * spread * unit_random)
