"""Every allowed and every forbidden status move."""

import itertools

import pytest

from renderfarm.core.jobs import (
    TERMINAL_STATUSES,
    InvalidTransition,
    JobStatus,
    allowed_sources,
    can_transition,
    transition,
)

ALLOWED = {
    (JobStatus.queued, JobStatus.running),
    (JobStatus.queued, JobStatus.cancelled),
    (JobStatus.running, JobStatus.succeeded),
    (JobStatus.running, JobStatus.failed),
    (JobStatus.running, JobStatus.cancelled),
    (JobStatus.running, JobStatus.retrying),
    (JobStatus.retrying, JobStatus.running),
    (JobStatus.retrying, JobStatus.cancelled),
    (JobStatus.failed, JobStatus.queued),
    (JobStatus.cancelled, JobStatus.queued),
}


@pytest.mark.parametrize("current,target", sorted(ALLOWED))
def test_allowed_transition_returns_target(current, target):
    assert transition(current, target) is target
    assert can_transition(current, target)


@pytest.mark.parametrize(
    "current,target",
    sorted(pair for pair in itertools.product(JobStatus, JobStatus) if pair not in ALLOWED),
)
def test_forbidden_transition_raises(current, target):
    assert not can_transition(current, target)
    with pytest.raises(InvalidTransition):
        transition(current, target)


def test_succeeded_is_final():
    assert all(not can_transition(JobStatus.succeeded, target) for target in JobStatus)


def test_allowed_sources_is_the_inverse_of_the_table():
    for target in JobStatus:
        assert allowed_sources(target) == {current for current, t in ALLOWED if t == target}


def test_terminal_statuses():
    assert TERMINAL_STATUSES == {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}


def test_accepts_plain_strings():
    assert transition("queued", "running") is JobStatus.running
