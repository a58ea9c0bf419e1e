"""The synchronous (test) mode: job calls run at once, in the caller, with no worker.

Everything of the mode is here: the switch (:data:`execute_jobs_synchronously`),
running a call's attempts inline (:func:`run_inline`, and
:func:`run_inline_blocking` for code with no event loop), and running it on the
caller's own connection (:func:`on_connection`). The enqueue paths ask
:func:`enabled` once and hand the calls over; nothing else of koyojobs knows
the mode exists.

On a caller's connection, ``broker.enqueue(call, connection=conn)`` runs the
job on ``conn``: inside the job, ``current_broker()`` is the broker with that
one connection standing in for its pool. So the job sees what the caller wrote
in its transaction and not yet committed (a worker sees it after the commit),
and what the job writes commits or rolls back with the caller's transaction:
what a Celery task run eagerly inside ``transaction.atomic()``, or an Oban job
run ``:inline`` inside ``Repo.transaction``, does.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
from collections.abc import AsyncIterator, Generator, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import asyncpg
import pendulum
from asyncpg.pool import PoolConnectionProxy

from .context import RetryJob, SnoozeJob, running
from .errors import SerializationError, describe
from .execution import call
from .hooks import JobOutcome, run_hooks
from .models import RunningJob, Status
from .outcomes import after_failure
from .serializer import Serializer

if TYPE_CHECKING:
    from .broker import Broker
    from .database import Database
    from .jobs import JobCall

__all__ = [
    "SynchronousMode",
    "enabled",
    "execute",
    "execute_blocking",
    "execute_jobs_synchronously",
    "next_id",
    "on_connection",
    "prepare",
    "run_calls",
    "run_inline",
    "run_inline_blocking",
    "savepoint",
]

Connection = asyncpg.Connection | PoolConnectionProxy

# Ids of inline runs: negative, so that no stored job ever has one.
_ids = itertools.count(-1, -1)


def next_id() -> int:
    """A fresh negative id, for an inline run (or an inline workflow)."""
    return next(_ids)


class SynchronousMode:
    """Run jobs inline, in the caller's task, with no database.

    Use it as a context manager in tests, or switch it for a REPL session
    with ``enable()`` / ``disable()``. Arguments still round-trip through the
    serializer; a job's exception reaches the caller; ``retry()`` runs the job
    again at once, up to ``max_attempts``. Awaiting a job call returns the
    inline run's id: a negative number, which names no stored job
    (``current_job().id`` inside the run).

    Example:
        >>> from koyojobs import define_job, execute_jobs_synchronously
        >>> @define_job(name="doc.add")
        ... def add(a: int, b: int) -> int:
        ...     return a + b
        >>> with execute_jobs_synchronously():
        ...     execute_jobs_synchronously.enabled()
        True
    """

    def __init__(self) -> None:
        self._enabled = False

    def enabled(self) -> bool:
        """Whether job calls run inline now."""
        return self._enabled

    def enable(self) -> None:
        """Run job calls inline from now on."""
        self._enabled = True

    def disable(self) -> None:
        """Enqueue job calls again."""
        self._enabled = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        previous = self._enabled
        self._enabled = True
        try:
            yield
        finally:
            self._enabled = previous


execute_jobs_synchronously = SynchronousMode()
enabled = execute_jobs_synchronously.enabled


class _Inline:
    """One job call run in the synchronous mode: its arguments, attempts and checks."""

    def __init__(self, job_call: JobCall[Any], serializer: Serializer) -> None:
        self.definition = definition = job_call.definition
        self.serializer = serializer
        self.id = next_id()
        name = definition.name
        self.args, self.kwargs = serializer.load_arguments(
            serializer.sign_arguments(job_call.payload, name), name
        )
        self._scheduled_at = pendulum.now("UTC")
        self.workflow_id: int | None = None
        """The inline workflow's (negative) id, for a step of one."""

    def attempts(self) -> Iterator[RunningJob]:
        d = self.definition
        for number in range(1, d.max_attempts + 1):
            yield RunningJob(
                self.id,
                d.name,
                d.queue,
                number,
                d.max_attempts,
                self._scheduled_at,
                self.workflow_id,
            )

    def retried(self, exc: RetryJob, job: RunningJob) -> None:
        """Return to run again; raise when ``retry()`` or ``snooze()`` came on the last attempt.

        A snooze counts as an attempt here: in this mode the job runs again
        at once, and a job that always snoozes must not loop forever.
        """
        decision = after_failure(
            exc, attempt=job.attempt, max_attempts=job.max_attempts, backoff=self.definition.backoff
        )
        if job.attempt >= job.max_attempts or decision.status is not Status.READY:
            called = "snooze()" if isinstance(exc, SnoozeJob) else "retry()"
            raise RuntimeError(
                f"job {self.definition.name!r} called {called} on its last attempt "
                f"({job.attempt} of {job.max_attempts})"
            ) from None

    async def failed(self, job: RunningJob, exc: BaseException) -> None:
        """The ``on_failure`` hooks: the inline run raises, with no attempt left."""
        if self.definition.failure_hooks:
            outcome = JobOutcome(job, self.args, self.kwargs, error=exc)
            await run_hooks(self.definition.failure_hooks, outcome, None, "on_failure")

    async def succeeded(self, job: RunningJob, value: Any) -> None:
        """The ``on_success`` hooks."""
        if self.definition.success_hooks:
            outcome = JobOutcome(job, self.args, self.kwargs, result=value)
            await run_hooks(self.definition.success_hooks, outcome, None, "on_success")

    def check(self, value: Any) -> None:
        name = self.definition.name
        try:
            self.serializer.load_result(self.serializer.dump_result(value, name), name)
        except Exception as exc:
            raise SerializationError(
                f"result of job {name!r} cannot be serialized: {describe(exc)}"
            ) from exc


async def run_inline(job_call: JobCall[Any], broker: Broker | None) -> int:
    """Run ``job_call`` now, in this task; returns the run's (negative) id.

    The arguments and the result still round-trip through the serializer, a
    raised exception reaches the caller, and ``retry()`` runs the job again at
    once until ``max_attempts`` is spent. ``broker`` (``None``: none started)
    is the one the job sees as ``current_broker()``; its middleware wraps it.
    """
    inline = prepare(job_call, broker)
    await execute(inline, broker)
    return inline.id


def prepare(job_call: JobCall[Any], broker: Broker | None) -> _Inline:
    """An inline run of ``job_call``, its id drawn and its arguments round-tripped."""
    return _Inline(job_call, broker.serializer if broker is not None else Serializer())


async def execute(inline: _Inline, broker: Broker | None) -> Any:
    """Run ``inline`` as :func:`run_inline` says; returns the job's return value."""
    definition = inline.definition
    value: Any = None
    for job in inline.attempts():
        try:
            try:
                value = await call(definition, inline.args, inline.kwargs, job, broker, None)
            except RetryJob as exc:
                inline.retried(exc, job)
                continue
            inline.check(value)
        except Exception as exc:
            with running(job, broker):
                await inline.failed(job, exc)
            raise
        with running(job, broker):
            await inline.succeeded(job, value)
        break
    return value


def run_inline_blocking(job_call: JobCall[Any]) -> int:
    """:func:`run_inline` for synchronous code, where no event loop runs.

    A plain ``def`` job runs right here, in the caller's thread and outside
    any event loop, as the caller's own code would (Django's ORM refuses to
    run inside one); an ``async def`` job in an event loop of its own. Its
    hooks run after it, as in :func:`run_inline`.
    """
    inline = prepare(job_call, None)
    execute_blocking(inline)
    return inline.id


def execute_blocking(inline: _Inline) -> Any:
    """Run ``inline`` as :func:`run_inline_blocking` says; returns the job's return value."""
    definition = inline.definition
    value: Any = None
    for job in inline.attempts():
        try:
            try:
                if definition.is_async:
                    value = asyncio.run(
                        call(definition, inline.args, inline.kwargs, job, None, None)
                    )
                else:
                    with running(job, None):
                        value = definition.fn(*inline.args, **inline.kwargs)
            except RetryJob as exc:
                inline.retried(exc, job)
                continue
            inline.check(value)
        except Exception as exc:
            if definition.failure_hooks:
                with running(job, None):
                    asyncio.run(inline.failed(job, exc))
            raise
        if definition.success_hooks:
            with running(job, None):
                asyncio.run(inline.succeeded(job, value))
        break
    return value


async def run_calls(
    calls: Sequence[JobCall[Any]], broker: Broker, connection: Connection | None
) -> list[int]:
    """Run ``calls`` in order as ``broker.enqueue`` would have enqueued them.

    With ``connection``, on it (see the module's doc), each in a savepoint
    when the connection is in a transaction, so that a job that fails leaves
    the caller's transaction usable.
    """
    bound = broker if connection is None else on_connection(broker, connection)
    ids = []
    for job_call in calls:
        async with savepoint(connection):
            ids.append(await run_inline(job_call, bound))
    return ids


@contextlib.asynccontextmanager
async def savepoint(connection: Connection | None) -> AsyncIterator[None]:
    """A savepoint around one inline run on ``connection``, if it is in a transaction.

    So a job that fails rolls back what it wrote and leaves the caller's
    transaction usable. Without a connection, or outside a transaction, nothing.

    Example:
        >>> async with savepoint(None):  # doctest: +SKIP
        ...     await run_inline(my_job(1), broker)
    """
    if connection is not None and connection.is_in_transaction():
        async with connection.transaction():
            yield
    else:
        yield


class _Acquired:
    """``pool.acquire()`` of :class:`_ConnectionAsPool`: the one connection, never released."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    async def __aenter__(self) -> Connection:
        return self._connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def __await__(self) -> Generator[Any, None, Connection]:
        return self.__aenter__().__await__()


class _ConnectionAsPool:
    """Stands in for a pool: every query and every ``acquire()`` get one connection."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def acquire(self, *, timeout: float | None = None) -> _Acquired:
        return _Acquired(self._connection)

    async def release(self, connection: Connection, *, timeout: float | None = None) -> None:
        return None  # it stays the caller's

    def __getattr__(self, name: str) -> Any:
        # execute, fetch, fetchval, fetchrow, executemany, copy_*: same calls as a pool's.
        return getattr(self._connection, name)


class _DatabaseOnConnection:
    """Wraps a :class:`Database`: its pool is the caller's one connection."""

    def __init__(self, database: Database, connection: Connection) -> None:
        self._database = database
        self._pool = _ConnectionAsPool(connection)

    @property
    def pool(self) -> asyncpg.Pool:
        return cast(asyncpg.Pool, self._pool)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database, name)


def on_connection(broker: Broker, connection: Connection) -> Broker:
    """``broker`` as it is (serializer, middleware, retention), its queries going through
    ``connection``: a copy whose database is wrapped, not a subclass.

    Example:
        >>> async with broker.pool.acquire() as conn, conn.transaction():  # doctest: +SKIP
        ...     bound = on_connection(broker, conn)
        ...     await bound.pool.fetchval("SELECT 1")  # on conn, in its transaction
        1
    """
    bound = copy.copy(broker)
    bound.database = cast("Database", _DatabaseOnConnection(broker.database, connection))
    bound._started = True  # the caller's connection is open: no start of its own
    return bound
