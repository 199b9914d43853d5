from hypothesis import given
from hypothesis import strategies as st

from renderfarm.core.jobs import ErrorType
from renderfarm.core.maintenance import aged_priority
from renderfarm.core.queues import Priority
from renderfarm.core.retry import RetryPolicy, max_attempts, retry_delay, should_retry
from renderfarm.core.store import new_attempt_token, token_pid
from renderfarm.worker.bootsteps import desired_consumption, reconcile_plan

POLICY = RetryPolicy(max_retries=3, base_delay_s=2, max_delay_s=60, jitter=0.5)


def test_only_transient_errors_are_retried():
    assert should_retry(POLICY, ErrorType.transient, 0)
    assert should_retry(POLICY, ErrorType.timeout, 2)
    assert not should_retry(POLICY, ErrorType.transient, 3)
    assert not should_retry(POLICY, ErrorType.invalid_media, 0)
    assert not should_retry(POLICY, ErrorType.internal, 0)


@given(retries=st.integers(0, 20), unit=st.floats(0, 0.999999))
def test_backoff_is_bounded_and_jittered(retries, unit):
    delay = retry_delay(POLICY, retries, unit)
    nominal = min(60, 2 * 2**retries)
    assert nominal * 0.5 <= delay <= nominal * 1.5


def test_backoff_grows_exponentially_without_jitter():
    policy = RetryPolicy(base_delay_s=1, max_delay_s=100, jitter=0)
    assert [retry_delay(policy, n, 0.3) for n in range(4)] == [1, 2, 4, 8]


def test_a_lost_run_is_retried_within_the_attempt_budget():
    assert max_attempts(POLICY) == 4
    assert should_retry(POLICY, ErrorType.worker_lost, 2)
    assert not should_retry(POLICY, ErrorType.worker_lost, 3)


def test_an_attempt_token_names_its_pool_process_and_is_unique():
    first, second = new_attempt_token(4242), new_attempt_token(4242)
    assert first != second and token_pid(first) == token_pid(second) == 4242
    assert token_pid("") is None and token_pid("garbage") is None


def test_aging_moves_one_priority_per_period():
    assert aged_priority("low", "low", 599, 600) is None
    assert aged_priority("low", "low", 600, 600) is Priority.normal
    assert aged_priority("low", "normal", 1300, 600) is Priority.high
    assert aged_priority("low", "low", 10_000, 600) is Priority.critical
    assert aged_priority("high", "high", 10, 0) is None


def test_pause_reconcile_keeps_priority_order():
    order = ["cpu.critical", "cpu.high", "cpu.normal", "cpu.low"]
    assert desired_consumption(order, {"cpu.high"}) == ["cpu.critical", "cpu.normal", "cpu.low"]
    # Resuming cpu.high must not append it after cpu.low.
    cancel, add = reconcile_plan(["cpu.critical", "cpu.normal", "cpu.low"], order)
    assert cancel == ["cpu.normal", "cpu.low"] and add == ["cpu.high", "cpu.normal", "cpu.low"]
    assert reconcile_plan(order, order) == ([], [])
