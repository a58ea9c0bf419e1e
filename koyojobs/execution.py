"""Running one attempt of a job and turning what happened into a Decision.

The worker calls :func:`attempt` for each claimed row; the synchronous mode
calls :func:`run_inline`. Both go through :func:`call` and ``outcomes``.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

import pendulum
from asyncpg import Record

from .context import RetryJob, running
from .errors import PayloadError, SerializationError
from .models import RunningJob, Status
from .outcomes import Decision, after_failure, default_backoff, succeeded, unreadable
from .registry import lookup
from .serializer import Serializer

if TYPE_CHECKING:
    from .broker import Broker
    from .jobs import JobCall, JobDefinition

__all__ = ["UnknownJobError", "attempt", "call", "run_inline"]


class UnknownJobError(LookupError):
    """No module imported by this worker defines the job's name."""


async def call(
    definition: JobDefinition[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    job: RunningJob,
    broker: Broker | None,
    executor: Executor | None,
) -> Any:
    """Run the job function once, as ``job``, within its timeout.

    An ``async def`` runs in this task. A plain ``def`` runs on ``executor``
    (``None``: right here, as the synchronous mode wants); its thread cannot
    be stopped, so on timeout its eventual result is dropped.
    """
    timeout = definition.timeout
    with running(job, broker):
        if definition.is_async:
            awaitable = definition.fn(*args, **kwargs)
        elif executor is None:
            return definition.fn(*args, **kwargs)
        else:
            context = contextvars.copy_context()
            awaitable = asyncio.get_running_loop().run_in_executor(
                executor, functools.partial(context.run, definition.fn, *args, **kwargs)
            )
        if timeout is None:
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except TimeoutError:
            raise TimeoutError(
                f"job {definition.name!r} ran past its timeout of {timeout:g}s"
            ) from None


async def attempt(
    row: Record, serializer: Serializer, broker: Broker, executor: Executor
) -> Decision:
    """Run the claimed job ``row`` once and decide what to store.

    Never raises for what the job does; a ``CancelledError`` aimed at this
    task (shutdown, cancel) propagates.
    """
    name: str = row["name"]
    number: int = row["attempts"]
    max_attempts: int = row["max_attempts"]
    definition = lookup(name)
    if definition is None:
        return after_failure(
            UnknownJobError(f"unknown job {name!r}: no imported module defines it"),
            attempt=number,
            max_attempts=max_attempts,
            backoff=default_backoff,
        )
    try:
        args, kwargs = serializer.loads(row["args"])
    except PayloadError as exc:
        return unreadable(str(exc))
    job = RunningJob(
        id=row["id"],
        name=name,
        queue=row["queue"],
        attempt=number,
        max_attempts=max_attempts,
        scheduled_for=row["scheduled_at"],
    )
    try:
        value = await call(definition, args, kwargs, job, broker, executor)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return _failed(exc, job, definition)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return _failed(exc, job, definition)
    try:
        return succeeded(serializer.dumps(value))
    except Exception as exc:
        error = SerializationError(
            f"result of job {name!r} cannot be serialized: {type(exc).__name__}: {exc}"
        )
        return _failed(error, job, definition)


def _failed(exc: BaseException, job: RunningJob, definition: JobDefinition[Any, Any]) -> Decision:
    return after_failure(
        exc, attempt=job.attempt, max_attempts=job.max_attempts, backoff=definition.backoff
    )


async def run_inline(job_call: JobCall[Any], broker: Broker | None) -> None:
    """The synchronous mode: run ``job_call`` now, in this task.

    The arguments and the result still round-trip through the serializer, a
    raised exception reaches the caller, and ``retry()`` runs the job again at
    once until ``max_attempts`` is spent.
    """
    definition = job_call.definition
    serializer = broker.serializer if broker is not None else Serializer()
    args, kwargs = serializer.loads(serializer.sign(job_call.payload))
    scheduled_at = pendulum.now("UTC")
    for number in range(1, definition.max_attempts + 1):
        job = RunningJob(
            0, definition.name, definition.queue, number, definition.max_attempts, scheduled_at
        )
        try:
            value = await call(definition, args, kwargs, job, broker, None)
        except RetryJob as exc:
            decision = _failed(exc, job, definition)
            if decision.status is Status.READY:
                continue
            raise RuntimeError(
                f"job {definition.name!r} called retry() on its last attempt "
                f"({number} of {definition.max_attempts})"
            ) from None
        try:
            serializer.loads(serializer.dumps(value))
        except Exception as exc:
            raise SerializationError(
                f"result of job {definition.name!r} cannot be serialized: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return
