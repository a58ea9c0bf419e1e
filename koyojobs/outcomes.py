"""The one place that decides what happens after an attempt.

The worker, the rescue of lapsed leases (in SQL, with the same rule) and the
synchronous mode all follow it: success is ``done``; a failure or a
``retry()`` goes back to ``ready`` after a delay while attempts remain, and
is ``failed`` once they are spent; an unreadable payload is ``failed`` at once.
"""

from __future__ import annotations

import math
import random
import traceback as tb
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .context import RetryJob, SnoozeJob
from .errors import describe
from .models import Status

__all__ = [
    "Backoff",
    "Decision",
    "after_failure",
    "default_backoff",
    "first_batch",
    "succeeded",
    "unreadable",
    "unstorable",
]

Backoff = Callable[[int], float]

_BACKOFF_CAP = 3600.0
_LONGEST_DELAY = 365 * 86400.0


def default_backoff(attempt: int) -> float:
    """Seconds to wait after failed attempt ``attempt``: doubling, jittered, capped at an hour.

    Example:
        >>> 1.5 <= default_backoff(1) <= 2.5
        True
        >>> default_backoff(40) <= 3600 * 1.25
        True
    """
    base = min(_BACKOFF_CAP, 2.0 ** min(attempt, 32))
    return base * random.uniform(0.75, 1.25)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to store for one finished attempt."""

    status: Status
    result: bytes | None = None
    error: str | None = None
    traceback: str | None = None
    delay: float = 0.0
    snoozed: bool = False
    """Ready again without spending the attempt (``snooze()``)."""
    progress: float | None = None
    """What the run last reported with ``report_progress()`` (``None``: nothing)."""
    progress_message: str | None = None


Outcome = tuple[int, int, Decision]
"""A decision for one attempt: (job id, attempt number, decision)."""


def as_columns(outcomes: Sequence[Outcome]) -> list[list[Any]]:
    """The outcomes as the arrays ``finish_and_claim`` takes ($5..$13), in order."""
    return [
        [job_id for job_id, _, _ in outcomes],
        [number for _, number, _ in outcomes],
        # "snoozed" is no status: finish_and_claim stores it as ready and
        # gives the attempt back.
        ["snoozed" if d.snoozed else d.status.value for _, _, d in outcomes],
        [d.result for _, _, d in outcomes],
        [d.error for _, _, d in outcomes],
        [d.traceback for _, _, d in outcomes],
        [d.delay for _, _, d in outcomes],
        [d.progress for _, _, d in outcomes],
        [d.progress_message for _, _, d in outcomes],
    ]


def first_batch(outcomes: Sequence[Outcome], max_bytes: int) -> int:
    """How many of ``outcomes`` (from the first) to write in one statement.

    At most ``max_bytes`` of results, errors and tracebacks, and always at
    least one: a round trip must fit in its deadline however big the
    results the jobs returned.

    Example:
        >>> big = Decision(Status.DONE, result=b"x" * 600)
        >>> first_batch([(1, 1, big), (2, 1, big), (3, 1, big)], max_bytes=1000)
        1
    """
    size = 0
    for count, (_, _, d) in enumerate(outcomes):
        size += len(d.result or b"") + len(d.error or "") + len(d.traceback or "")
        if size > max_bytes and count:
            return count
    return len(outcomes)


def unstorable(decision: Decision, reason: str) -> Decision:
    """What to store instead of a ``decision`` the database refused: failed, saying why."""
    return Decision(Status.FAILED, error=f"the outcome could not be stored: {reason}")


def succeeded(result: bytes) -> Decision:
    """The attempt returned; ``result`` is its serialized return value."""
    return Decision(Status.DONE, result=result)


def unreadable(reason: str) -> Decision:
    """The payload cannot be read: no attempt can ever succeed, so fail now."""
    return Decision(Status.FAILED, error=reason)


def after_failure(
    exc: BaseException, *, attempt: int, max_attempts: int, backoff: Backoff
) -> Decision:
    """The attempt raised ``exc`` (or called ``retry()``): retry later, or fail for good."""
    if isinstance(exc, SnoozeJob):
        return Decision(Status.READY, delay=_bounded(exc.delay), snoozed=True)
    if isinstance(exc, RetryJob):
        error, trace = "retry() requested", None
    else:
        error = describe(exc)
        trace = "".join(tb.format_exception(exc))
    if attempt >= max_attempts:
        return Decision(Status.FAILED, error=error, traceback=trace)
    if isinstance(exc, RetryJob) and exc.delay is not None:
        delay = exc.delay
    else:
        delay = float(backoff(attempt))
    return Decision(Status.READY, error=error, traceback=trace, delay=_bounded(delay))


def _bounded(delay: float) -> float:
    # The database refuses an interval that does not fit (a backoff returning
    # inf, or 1e300), and one refused value would fail the whole batch of
    # outcomes every round: a year at most, and never negative or NaN.
    if not math.isfinite(delay):
        return _LONGEST_DELAY if delay > 0 else 0.0
    return min(max(delay, 0.0), _LONGEST_DELAY)
