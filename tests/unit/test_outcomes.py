"""The decision after an attempt."""

from __future__ import annotations

from koyojobs import Status, default_backoff
from koyojobs.context import RetryJob
from koyojobs.outcomes import after_failure, succeeded, unreadable


def test_failure_retries_until_attempts_are_spent() -> None:
    exc = ValueError("boom")
    first = after_failure(exc, attempt=1, max_attempts=2, backoff=lambda a: 7.0)
    assert (first.status, first.delay, first.error) == (Status.READY, 7.0, "ValueError: boom")
    last = after_failure(exc, attempt=2, max_attempts=2, backoff=lambda a: 7.0)
    assert last.status is Status.FAILED
    assert last.traceback is not None
    assert "ValueError: boom" in last.traceback


def test_retry_uses_its_delay_else_the_backoff() -> None:
    assert after_failure(RetryJob(2.5), attempt=1, max_attempts=3, backoff=lambda a: 9).delay == 2.5
    assert after_failure(RetryJob(None), attempt=1, max_attempts=3, backoff=lambda a: 9).delay == 9
    spent = after_failure(RetryJob(1), attempt=3, max_attempts=3, backoff=lambda a: 9)
    assert spent.status is Status.FAILED
    assert spent.error == "retry() requested"


def test_success_and_unreadable() -> None:
    assert succeeded(b"r").status is Status.DONE
    assert unreadable("bad signature").status is Status.FAILED


def test_default_backoff_grows_and_is_capped() -> None:
    assert 1.5 <= default_backoff(1) <= 2.5
    assert 12 <= default_backoff(4) <= 20
    assert all(default_backoff(a) <= 3600 * 1.25 for a in range(1, 100))


def test_a_batch_of_outcomes_is_bounded_by_bytes_but_never_empty() -> None:
    from koyojobs.models import Status
    from koyojobs.outcomes import Decision, first_batch

    small = Decision(Status.DONE, result=b"x" * 100)
    huge = Decision(Status.DONE, result=b"x" * 5000)
    failed = Decision(Status.FAILED, error="e" * 400, traceback="t" * 500)
    assert first_batch([], 1000) == 0
    assert first_batch([(1, 1, huge)], 1000) == 1  # alone, however big
    assert first_batch([(1, 1, small)] * 9, 1000) == 9
    assert first_batch([(1, 1, small)] * 11, 1000) == 10
    assert first_batch([(1, 1, small), (2, 1, huge), (3, 1, small)], 1000) == 1
    assert first_batch([(1, 1, failed), (2, 1, failed)], 1000) == 1
