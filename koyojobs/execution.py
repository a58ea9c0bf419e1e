"""Running one attempt of a job and turning what happened into a Decision.

The worker calls :func:`attempt` for each claimed row; the synchronous mode
(:mod:`koyojobs.synchronous`) calls :func:`call` for each inline attempt. Both
decide through ``outcomes``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from asyncpg import Record

from . import instrumentation
from .context import running, thread_context
from .errors import PayloadError, SerializationError, describe
from .hooks import JobOutcome, run_hooks, through
from .models import RunningJob, Status
from .outcomes import Decision, after_failure, default_backoff, succeeded, unreadable
from .registry import lookup
from .serializer import Serializer

if TYPE_CHECKING:
    from .broker import Broker
    from .jobs import JobDefinition

__all__ = [
    "UnknownJobError",
    "attempt",
    "call",
    "warn_if_unsigned",
]

log = logging.getLogger("koyojobs.worker")


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
    (``None``: right here, as the synchronous mode wants), with the context
    variables of this task (those the broker's middleware set included); its
    thread cannot be stopped, so on timeout its eventual result is dropped.
    The broker's middleware wraps the call, the first one outermost.
    """
    with running(job, broker):
        if broker is None or not broker.middleware:
            return await _call(definition, args, kwargs, executor)
        return await through(
            broker.middleware, job, functools.partial(_call, definition, args, kwargs, executor)
        )


async def _call(
    definition: JobDefinition[Any, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    executor: Executor | None,
) -> Any:
    timeout = definition.timeout
    if definition.is_async:
        awaitable = definition.fn(*args, **kwargs)
    elif executor is None:
        return definition.fn(*args, **kwargs)
    else:
        context = thread_context()
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

    Never raises for what the row holds or what the job does: a worker holds
    the job until it has a decision, so an escaping exception would keep the
    job ``running`` for good. Only a ``CancelledError`` aimed at this task
    (shutdown, cancel) and ``KeyboardInterrupt`` propagate. The decision's
    text can always be stored.
    """
    observer = instrumentation.observer
    if observer is None:
        return await _guarded(row, serializer, broker, executor)
    with observer.attempt(row) as finished:
        decision = await _guarded(row, serializer, broker, executor)
        finished(decision)
        return decision


async def _guarded(
    row: Record, serializer: Serializer, broker: Broker, executor: Executor
) -> Decision:
    try:
        decision = await _attempt(row, serializer, broker, executor)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        decision = _broken(row, exc)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        decision = _broken(row, exc)
    return _storable(decision)


async def _attempt(
    row: Record, serializer: Serializer, broker: Broker, executor: Executor
) -> Decision:
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
        args, kwargs = serializer.load_arguments(row["args"], name)
    except PayloadError as exc:
        return unreadable(str(exc))
    job = RunningJob(
        id=row["id"],
        name=name,
        queue=row["queue"],
        attempt=number,
        max_attempts=max_attempts,
        scheduled_for=row["scheduled_at"],
        workflow_id=row["workflow_id"],
    )
    error: BaseException
    try:
        value = await call(definition, args, kwargs, job, broker, executor)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        error = exc
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        error = exc
    else:
        try:
            decision = succeeded(serializer.dump_result(value, name))
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # pickling a result may run its code: SystemExit too
            error = SerializationError(
                f"result of job {name!r} cannot be serialized: {describe(exc)}"
            )
        else:
            if definition.success_hooks:
                outcome = JobOutcome(job, args, kwargs, result=value)
                with running(job, broker):
                    await run_hooks(definition.success_hooks, outcome, executor, "on_success")
            return decision
    decision = _failed(error, job, definition)
    if definition.failure_hooks and decision.status is Status.FAILED:
        outcome = JobOutcome(job, args, kwargs, error=error)
        with running(job, broker):
            await run_hooks(definition.failure_hooks, outcome, executor, "on_failure")
    return decision


def _broken(row: Record, exc: BaseException) -> Decision:
    """What handling the row raised (an exception that cannot be printed, a
    backoff that raises): the job ends, failed, saying so."""
    return unreadable(f"job {row['name']!r} could not be run: {describe(exc)}")


def _storable(decision: Decision) -> Decision:
    # PostgreSQL text holds neither NUL nor lone surrogates, and one value it
    # refuses fails the whole batch of outcomes, every round: escape them.
    error, trace = _text(decision.error), _text(decision.traceback)
    if error is decision.error and trace is decision.traceback:
        return decision
    return dataclasses.replace(decision, error=error, traceback=trace)


def _text(text: str | None) -> str | None:
    if text is None or ("\x00" not in text and text.isascii()):
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode()
    return text.replace("\x00", "\\x00") if "\x00" in text else text


def _failed(exc: BaseException, job: RunningJob, definition: JobDefinition[Any, Any]) -> Decision:
    return after_failure(
        exc, attempt=job.attempt, max_attempts=job.max_attempts, backoff=definition.backoff
    )


_warned_unsigned = False


def warn_if_unsigned(serializer: Serializer) -> None:
    """Log once per process that a worker without a secret runs whatever the table holds.

    Example:
        >>> warn_if_unsigned(Serializer(["key"]))  # signed: nothing to say
    """
    global _warned_unsigned
    if serializer.signs or _warned_unsigned:
        return
    _warned_unsigned = True
    log.warning(
        "payloads are not signed: anyone who can write the jobs table can run code in this "
        "worker; set Broker(secret=...) or KOYOJOBS_SECRET (see the Security page)"
    )
