"""Where code runs: ``current_job``, ``current_broker``, and ``retry``/``snooze`` that end a job.

The running job and the broker it came from live in context variables, set by
the worker around each run (and copied into the thread of a plain ``def``
job); the default broker is a process-wide switch. ``retry()`` and
``snooze()`` end a running job. (The synchronous mode's switch is in
:mod:`koyojobs.synchronous`.)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

from ._validate import is_seconds
from .models import RunningJob

if TYPE_CHECKING:
    from .broker import Broker

__all__ = [
    "RetryJob",
    "SnoozeJob",
    "current_broker",
    "current_job",
    "job_loop",
    "retry",
    "running",
    "set_current_broker",
    "snooze",
    "thread_context",
]

_job: contextvars.ContextVar[RunningJob | None] = contextvars.ContextVar(
    "koyojobs_job", default=None
)
_job_broker: contextvars.ContextVar[Broker | None] = contextvars.ContextVar(
    "koyojobs_job_broker", default=None
)
_job_loop: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "koyojobs_job_loop", default=None
)
_default_broker: Broker | None = None


class RetryJob(BaseException):
    """Raised by :func:`retry`; ends the job's attempt and schedules another.

    It derives from ``BaseException`` so that a job's ``except Exception:``
    does not swallow it.
    """

    def __init__(self, delay: float | None) -> None:
        super().__init__(delay)
        self.delay = delay


def retry(delay: float | None = None) -> NoReturn:
    """End the running job now and run it again later.

    The job runs again after ``delay`` seconds, or after its backoff when
    ``delay`` is ``None``. This attempt counts toward ``max_attempts``.

    Example:
        >>> from koyojobs import define_job, retry
        >>> @define_job(name="doc.poll_payment")
        ... async def poll_payment(payment_id: int) -> None:
        ...     if not await is_settled(payment_id):
        ...         retry(delay=30)
    """
    if _job.get() is None:
        raise RuntimeError("retry() was called outside a running job")
    if delay is not None and delay < 0:
        raise ValueError(f"retry() delay must be >= 0 seconds, got {delay!r}")
    raise RetryJob(delay)


class SnoozeJob(RetryJob):
    """Raised by :func:`snooze`: ends the attempt, which does not count."""

    delay: float


# A year: what the database holds as a delay, and more than any snooze means.
_LONGEST_SNOOZE = 365 * 86400.0


def snooze(seconds: float) -> NoReturn:
    """End the running job now and run it again after ``seconds``, spending no attempt.

    For a job that finds it is too early (a resource is busy, a rate limit
    elsewhere): unlike :func:`retry`, ``attempts`` stays as it was, so a job
    may snooze any number of times. Each snooze is counted in the job's
    ``snoozes`` (``Job.snoozes``, ``koyojobs jobs``), so one that snoozes
    forever shows. It raises a ``BaseException`` like ``retry()``. In the
    synchronous mode it runs the job again at once, as an attempt, so a test
    cannot loop forever.

    Example:
        >>> from koyojobs import define_job, snooze
        >>> @define_job(name="doc.export")
        ... async def export(report_id: int) -> None:
        ...     if await warehouse_is_busy():
        ...         snooze(60)
    """
    if _job.get() is None:
        raise RuntimeError("snooze() was called outside a running job")
    if not is_seconds(seconds, zero=True, most=_LONGEST_SNOOZE):
        raise ValueError(f"snooze() needs 0 to {_LONGEST_SNOOZE:.0f} seconds, got {seconds!r}")
    raise SnoozeJob(float(seconds))


def current_job() -> RunningJob | None:
    """The record of the job running in this task or thread, else ``None``.

    Example:
        >>> from koyojobs import current_job, define_job
        >>> @define_job(name="doc.which_attempt")
        ... async def which_attempt() -> int:
        ...     job = current_job()
        ...     assert job is not None
        ...     return job.attempt
        >>> current_job() is None
        True
    """
    return _job.get()


@contextlib.contextmanager
def running(job: RunningJob, broker: Broker | None) -> Iterator[None]:
    """Mark ``job`` as running in this context (for the worker and the synchronous mode)."""
    job_token = _job.set(job)
    broker_token = _job_broker.set(broker)
    try:
        yield
    finally:
        _job_broker.reset(broker_token)
        _job.reset(job_token)


def set_current_broker(broker: Broker | None) -> None:
    """Make ``broker`` the one that awaited job calls enqueue on.

    Example:
        >>> from koyojobs import Broker, set_current_broker
        >>> broker = Broker("postgresql://localhost/app")
        >>> set_current_broker(broker)
        >>> set_current_broker(None)
    """
    global _default_broker
    _default_broker = broker


def current_broker() -> Broker | None:
    """The broker job calls enqueue on: the running job's, else the one set.

    Example:
        >>> from koyojobs import current_broker
        >>> current_broker() is None
        True
    """
    return _job_broker.get() or _default_broker


def thread_context() -> contextvars.Context:
    """A copy of this task's context for a plain ``def`` job's (or hook's) thread.

    It also remembers this event loop: :func:`koyojobs.sync.upstream` runs its
    query there, on the broker's pool, from the job's thread.

    Example:
        >>> import asyncio
        >>> async def main() -> bool:
        ...     return thread_context().run(job_loop) is asyncio.get_running_loop()
        >>> asyncio.run(main()), job_loop()
        (True, None)
    """
    context = contextvars.copy_context()
    context.run(_job_loop.set, asyncio.get_running_loop())
    return context


def job_loop() -> asyncio.AbstractEventLoop | None:
    """In a plain ``def`` job's thread: the event loop of the worker that runs it, else ``None``."""
    return _job_loop.get()
