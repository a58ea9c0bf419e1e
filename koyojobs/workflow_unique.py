"""Unique jobs as workflow steps: a step of a unique job holds its key from its enqueue on.

A step stores its unique key, and schema 0011's unique index covers pending
rows too: a pending step holds its key as a ready or running job does. So
another job never takes the key while the step waits, and the step's release
(pending -> ready, in a worker's claim statement) can never break the index.
A plain unique enqueue while a step holds the key returns the step's id.

Enqueueing a workflow whose step's key an unfinished job holds already is a
one-line :class:`StepKeyHeldError` naming the step and the holder, and
inserts nothing (``insert_workflow`` looks before it inserts). A holder
committed while that statement ran makes the insert break the index instead:
the statement is run again (under a savepoint inside a caller's transaction,
so that stays usable), and then sees the holder and says the same. Until
``koyojobs migrate`` has built 0011's index (on a big table it builds it
after the migrations), a workflow with a unique step is a one-line
:class:`~koyojobs.errors.SchemaError`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import SchemaError
from .synchronous import savepoint
from .workflows import Workflow, WorkflowError, WorkflowRun

if TYPE_CHECKING:
    from .broker import Broker
    from .workflows import Connection

__all__ = ["StepKeyHeldError", "enqueue_blocking", "insert_workflow", "run_from"]

_KEYS = 18
"""Where the steps' unique keys are in ``insert_parameters`` (``$19``)."""
_INDEXES = frozenset({"koyojobs_jobs_unique_held_idx", "koyojobs_jobs_unique_idx"})
_DETAIL_KEY = re.compile(r"\(unique_key\)=\(([0-9a-f-]{36})\)")
_ATTEMPTS = 3


class StepKeyHeldError(WorkflowError):
    """A step's unique key is held by an unfinished job: the workflow was not enqueued.

    ``step`` names the step, ``holder`` the job holding its key (``None``:
    one committed after the caller's repeatable-read snapshot was taken).

    Example:
        >>> exc = StepKeyHeldError("workflow 'w', step 's': job 7 holds ...", "s", 7)
        >>> exc.step, exc.holder
        ('s', 7)
    """

    def __init__(self, message: str, step: str, holder: int | None) -> None:
        super().__init__(message)
        self.step = step
        self.holder = holder


def held(wf: Workflow, step: str, holder: int | None) -> StepKeyHeldError:
    """The error for ``step``'s key held by job ``holder``.

    Example:
        >>> print(held(Workflow("nightly"), "fetch", 42))  # doctest: +ELLIPSIS
        workflow 'nightly', step 'fetch': job 42 holds its unique key (...); nothing was enqueued
    """
    who = f"job {holder}" if holder is not None else "a job of another transaction"
    return StepKeyHeldError(
        f"{wf._where(step)}: {who} holds its unique key (pending, ready or running); "
        "nothing was enqueued",
        step,
        holder,
    )


def run_from(wf: Workflow, rows: Sequence[Any]) -> WorkflowRun:
    """The :class:`WorkflowRun` from the rows ``insert_workflow`` returned, or its refusal.

    Example:
        >>> run_from(Workflow(), [(7, 41, "fetch"), (7, 42, "notify")]).job_ids
        {'fetch': 41, 'notify': 42}
        >>> run_from(Workflow("w"), [(None, 9, "fetch")])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        koyojobs.workflow_unique.StepKeyHeldError: workflow 'w', step 'fetch': job 9 holds ...
    """
    if rows and rows[0][0] is None:
        holder, step = rows[0][1], rows[0][2]
        if step is None:
            first = next(s.name for s in wf.steps if s.call.unique_key is not None)
            raise SchemaError(
                f"{wf._where(first)} is a unique job, and unique steps need the index "
                "koyojobs_jobs_unique_held_idx, not built yet: run koyojobs migrate"
            )
        raise held(wf, step, holder)
    return WorkflowRun(rows[0][0], {row[2]: row[1] for row in rows})


def _violated_step(wf: Workflow, exc: BaseException) -> str | None:
    """The step whose key ``exc`` (or what it wraps) says broke a unique index, if so."""
    for error in (exc, exc.__cause__):
        if error is None or getattr(error, "sqlstate", None) != "23505":
            continue
        diag = getattr(error, "diag", None)  # psycopg's; asyncpg's are attributes
        name = getattr(diag or error, "constraint_name", None)
        detail = getattr(diag, "message_detail", None) if diag else getattr(error, "detail", None)
        if name not in _INDEXES:
            return None
        found = _DETAIL_KEY.search(detail or "")
        key = uuid.UUID(found[1]) if found else None
        for step in wf.steps:
            if step.call.unique_key is not None and uuid.UUID(step.call.unique_key) == key:
                return step.name
        return next(s.name for s in wf.steps if s.call.unique_key is not None)
    return None


def _keyed(parameters: Sequence[Any]) -> bool:
    return any(key is not None for key in parameters[_KEYS])


async def insert_workflow(
    broker: Broker, wf: Workflow, connection: Connection | None, parameters: Sequence[Any]
) -> WorkflowRun:
    """Run ``insert_workflow`` on ``connection`` (or the pool); see the module's docstring."""
    from .sql import QUERIES

    target = connection if connection is not None else broker.pool
    if not _keyed(parameters):
        return run_from(wf, await target.fetch(QUERIES["insert_workflow"], *parameters))
    step: str | None = None
    for _ in range(_ATTEMPTS):
        try:
            async with savepoint(connection):
                rows = await target.fetch(QUERIES["insert_workflow"], *parameters)
        except Exception as exc:
            step = _violated_step(wf, exc)
            if step is None:
                raise
            continue
        return run_from(wf, rows)
    assert step is not None
    raise held(wf, step, None)


def enqueue_blocking(
    wf: Workflow,
    parameters: Sequence[Any],
    fetch: Callable[[], list[tuple[Any, ...]]],
    kind: str,
    connection: Any,
) -> WorkflowRun:
    """``insert_workflow`` by ``fetch`` for :mod:`koyojobs.sync` (``kind`` of ``connection``)."""
    if not _keyed(parameters):
        return run_from(wf, fetch())
    step: str | None = None
    for _ in range(_ATTEMPTS):
        try:
            with _blocking_savepoint(kind, connection):
                rows = fetch()
        except Exception as exc:
            step = _violated_step(wf, exc)
            if step is None:
                raise
            continue
        return run_from(wf, rows)
    assert step is not None
    raise held(wf, step, None)


@contextmanager
def _blocking_savepoint(kind: str, connection: Any) -> Iterator[None]:
    """A savepoint on a caller's psycopg or Django connection, so a failed insert leaves
    its transaction usable; koyojobs' own connections commit each statement."""
    if kind == "django":
        from django.db import transaction

        with transaction.atomic(using=connection.alias):
            yield
    elif kind == "psycopg" and connection.info.transaction_status == 2:  # INTRANS
        with connection.transaction():
            yield
    elif kind == "psycopg" and not connection.autocommit:
        # The transaction begins with this statement: rolled back, nothing else goes.
        try:
            yield
        except Exception:
            connection.rollback()
            raise
    else:
        yield
