"""Hooks (``@job.on_success``, ``@job.on_failure``) and the broker's middleware.

Both run in a worker's attempt path (:mod:`koyojobs.execution`). Middleware
wraps the call of the job function; hooks run after it, once the attempt's
outcome is decided and before it is written. So a worker that dies between
the job's end and the write runs the job again (its lease lapses) and its
hooks with it: a hook runs at least once for a job that ends, and may run
twice, exactly as a job may.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from .context import thread_context
from .models import RunningJob

__all__ = ["CallNext", "Hook", "JobOutcome", "Middleware", "check_hook", "check_middleware"]

log = logging.getLogger("koyojobs.worker")

CallNext = Callable[[], Awaitable[Any]]
"""What a middleware awaits to run the rest of the chain (and the job); it returns the result."""

Middleware = Callable[[RunningJob, CallNext], Awaitable[Any]]
"""``async def mw(job: RunningJob, call_next) -> Any``: wraps every attempt."""


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What a hook is told: the attempt (``job``), its arguments, and its result or error.

    Example:
        >>> from koyojobs import JobOutcome, define_job
        >>> @define_job(name="doc.send_invoice")
        ... async def send_invoice(order_id: int) -> str:
        ...     return f"invoice-{order_id}"
        >>> @send_invoice.on_success
        ... async def mark_sent(outcome: JobOutcome) -> None:
        ...     print(outcome.args[0], outcome.result)
    """

    job: RunningJob
    """The attempt that ended (``job.attempt`` of ``job.max_attempts``)."""
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    """What the job returned (``on_success``)."""
    error: BaseException | None = None
    """What the last attempt raised (``on_failure``)."""


Hook = Callable[[JobOutcome], Awaitable[None] | None]
"""``async def`` or ``def``, given the :class:`JobOutcome`; what it returns is ignored."""


def check_hook(job_name: str, kind: str, hook: object) -> None:
    """Refuse what cannot be a hook, naming the job."""
    if not callable(hook):
        raise TypeError(f"job {job_name!r}: {kind} needs a function, got {hook!r}")


def check_middleware(middleware: object) -> tuple[Middleware, ...]:
    """The broker's middleware as a tuple; refuses anything but ``async def`` functions."""
    if middleware is None:
        return ()
    if isinstance(middleware, str | bytes) or not isinstance(middleware, Sequence):
        raise TypeError(f"Broker middleware must be a list of async functions, got {middleware!r}")
    for mw in middleware:
        if not inspect.iscoroutinefunction(mw):
            raise TypeError(
                f"Broker middleware must be 'async def mw(job, call_next)' functions, got {mw!r}"
            )
    return tuple(middleware)


async def through(middleware: Sequence[Middleware], job: RunningJob, innermost: CallNext) -> Any:
    """Run ``innermost`` wrapped by ``middleware``, the first one outermost."""
    call_next = innermost
    for mw in reversed(middleware):
        call_next = functools.partial(mw, job, call_next)
    return await call_next()


async def run_hooks(
    hooks: Sequence[Hook], outcome: JobOutcome, executor: Executor | None, kind: str
) -> None:
    """Run ``hooks`` in order; one that raises is logged at WARNING and the rest still run.

    A plain ``def`` hook runs on ``executor`` (``None``: right here, as the
    synchronous mode wants), with this task's context variables.
    """
    for hook in hooks:
        try:
            if inspect.iscoroutinefunction(hook):
                await hook(outcome)
            elif executor is None:
                value = hook(outcome)
                if inspect.isawaitable(value):  # a callable object with an async __call__
                    await value
            else:
                context = thread_context()
                value = await asyncio.get_running_loop().run_in_executor(
                    executor, functools.partial(context.run, hook, outcome)
                )
                if inspect.isawaitable(value):
                    await value
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            _hook_failed(hook, outcome, kind)
        except KeyboardInterrupt:
            raise
        except BaseException:
            _hook_failed(hook, outcome, kind)


def _hook_failed(hook: Hook, outcome: JobOutcome, kind: str) -> None:
    log.warning(
        "%s hook %s of job %r raised; the job's outcome stands",
        kind,
        getattr(hook, "__qualname__", repr(hook)),
        outcome.job.name,
        exc_info=True,
        extra={"job_id": outcome.job.id, "job": outcome.job.name, "attempt": outcome.job.attempt},
    )
