"""``Broker``: enqueue, inspect and cancel jobs; wake the workers of this process."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, overload

import asyncpg
import pendulum
from asyncpg.pool import PoolConnectionProxy
from pendulum import DateTime

from . import bulk_actions, instrumentation, synchronous
from ._validate import is_count, is_seconds
from .bulk import copies, copy_jobs
from .database import Database
from .enqueuer import Coalescer
from .errors import PayloadError
from .heartbeat import WorkerProcess
from .hooks import Middleware, check_middleware
from .inserts import ids_from, insert_for
from .jobs import JobCall
from .lifecycle import Lifecycle
from .listener import FINISHED_CHANNEL, Listener
from .models import Job, QueueStatus, ScheduleState, Status
from .retention import BATCH, Retention, expired_ages, resolve_retention
from .schema import migrate
from .serializer import Secret, Serializer
from .sql import QUERIES
from .waiting import DEFAULT_RECHECK, Waiters
from .wakeups import Wake, WakeUps
from .workflows import Workflow, WorkflowRecord, WorkflowRun, enqueue_workflow, get_workflow

__all__ = ["Broker"]

log = logging.getLogger("koyojobs.broker")

Connection = asyncpg.Connection | PoolConnectionProxy
Executor = Connection | asyncpg.Pool


class Broker(Lifecycle):
    """The door to the jobs table, and the process's one LISTEN connection.

    ``db`` is a :class:`Database` (started by its owner) or a DSN string (the
    broker then owns a pool). On start the schema is created or upgraded,
    unless ``migrate=False``. ``secret`` (or ``KOYOJOBS_SECRET`` when it is
    ``None``) signs every payload for its job name; a list signs with its
    first key and accepts any. An empty key, an empty list or an empty
    ``KOYOJOBS_SECRET`` is a ``ValueError``, never a silent "unsigned"; leave
    both unset to run unsigned (see the Security page). ``listen_dsn``
    opens the LISTEN connection elsewhere than the pool (a pool behind
    PgBouncer in transaction mode cannot LISTEN). ``middleware`` is a list
    of ``async def mw(job: RunningJob, call_next) -> Any`` that wrap every
    attempt the workers of this broker run (and the synchronous mode's),
    the first one outermost; ``await call_next()`` runs the rest and the
    job, and returns its result. A middleware that raises fails the attempt
    as the job would. ``retention`` overrides, per status, how long the
    workers of this broker keep finished jobs: by default ``done`` ones one
    day, ``failed`` and ``cancelled`` ones seven (``None`` keeps them; see
    the Operations page).

    Example:
        >>> from koyojobs import Broker, set_current_broker
        >>> async with Broker("postgresql://localhost/app") as broker:  # doctest: +SKIP
        ...     set_current_broker(broker)
        ...     job_id = await say_hello("Bogdan")
        ...     job = await broker.get_job(job_id)
    """

    def __init__(
        self,
        db: Database | str,
        *,
        migrate: bool = True,
        secret: Secret | Sequence[Secret] | None = None,
        listen_dsn: str | None = None,
        middleware: Sequence[Middleware] | None = None,
        retention: Mapping[Status | str, timedelta | None] | None = None,
    ) -> None:
        if isinstance(db, Database):
            self.database, self._owns_database = db, False
        elif isinstance(db, str):
            self.database, self._owns_database = Database(db), True
        else:
            raise TypeError(f"Broker needs a Database or a DSN string, got {db!r}")
        self.serializer = Serializer.from_options(secret)
        self.middleware = check_middleware(middleware)
        """Wraps every attempt this broker's workers run, the first one outermost."""
        self.retention: Retention = resolve_retention(retention)
        """How long this broker's workers keep finished jobs, per status (``None``: for good)."""
        self._migrate = migrate
        self._listen_dsn = listen_dsn
        self._waiters = Waiters(self)
        self._wakeups = WakeUps(self.database, listen_dsn, on_reconnect=self._waiters.notified)
        self._coalescer = Coalescer(lambda: self.pool, self.serializer)
        self._started = False

    # -- life -------------------------------------------------------------

    async def start(self) -> None:
        """Open the pool if the broker owns it, and migrate the schema."""
        if self._started:
            return
        if self._owns_database:
            await self.database.start()
        elif not self.database.started:
            raise RuntimeError("start the Database before the Broker that uses it")
        if self._migrate:
            await migrate(self.database.pool)
        self._started = True

    async def stop(self) -> None:
        """Close the LISTEN connection, and the pool if the broker owns it."""
        self._started = False
        await self._waiters.stop()
        await self._wakeups.stop()
        if self._owns_database:
            await self.database.stop()

    @property
    def listen_dsn(self) -> str | None:
        """Where the LISTEN connection (and a VACUUM) goes, if not through the pool."""
        return self._listen_dsn

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool queries go through."""
        if not self._started:
            raise RuntimeError("Broker is not started: use 'async with broker:' or await start()")
        return self.database.pool

    # -- wake-ups -----------------------------------------------------------

    async def subscribe(self, queue: str, wake: Wake) -> None:
        """Call ``wake()`` whenever jobs are inserted into ``queue`` (or may have been).

        The LISTEN connection opens with the first subscription, so a process
        that only enqueues holds none (see :mod:`koyojobs.wakeups`).
        """
        await self._wakeups.subscribe(queue, wake)

    def unsubscribe(self, queue: str, wake: Wake) -> None:
        """Stop waking ``wake`` for ``queue``."""
        self._wakeups.unsubscribe(queue, wake)

    async def _listen_finished(self, on_notify: Callable[[str], None]) -> None:
        await self._wakeups.listen(FINISHED_CHANNEL, on_notify)

    @property
    def listener(self) -> Listener | None:
        """The LISTEN connection's keeper, once a worker subscribed."""
        return self._wakeups.listener

    async def ping(self) -> None:
        """Raise unless the pool answers and the LISTEN connection (if open) is up and hearing.

        For health checks.

        Example:
            >>> await broker.ping()  # doctest: +SKIP
        """
        await self.pool.execute(QUERIES["ping"])
        self._wakeups.check()

    # -- enqueue --------------------------------------------------------------

    @overload
    async def enqueue(self, call: JobCall[Any], *, connection: Connection | None = None) -> int: ...
    @overload
    async def enqueue(
        self, call: Workflow, *, connection: Connection | None = None
    ) -> WorkflowRun: ...

    async def enqueue(
        self, call: JobCall[Any] | Workflow, *, connection: Connection | None = None
    ) -> int | WorkflowRun:
        """Insert one job; with ``connection``, inside the caller's transaction.

        Returns the new id. A :class:`~koyojobs.Workflow` inserts all its
        steps in one statement and returns a :class:`~koyojobs.WorkflowRun`.
        Workers wake when the inserting transaction commits. An enqueue that
        raises because the connection broke may still have committed. Without
        ``connection``, calls awaited at the same moment on one broker (many
        requests at once) share one INSERT and one commit, each with its own
        id or its own error; a lone call goes at once (see
        :mod:`koyojobs.enqueuer`). In the synchronous mode the job runs now, on
        ``connection`` if given (see :mod:`koyojobs.synchronous`), and the id
        is the inline run's.

        Example:
            >>> async with broker.pool.acquire() as conn, conn.transaction():  # doctest: +SKIP
            ...     await conn.execute("INSERT INTO orders ...")
            ...     await broker.enqueue(send_receipt(order_id), connection=conn)
        """
        if isinstance(call, Workflow):
            return await enqueue_workflow(self, call, connection)
        if (
            connection is None
            and isinstance(call, JobCall)
            and instrumentation.observer is None
            and not synchronous.enabled()
        ):
            # Each caller's span carries its own trace context, which one
            # statement for many could not: with OpenTelemetry on, no coalescing.
            call.consume()
            return await self._coalescer.enqueue(call)
        return (await self._enqueue([call], "a job call", connection))[0]

    async def enqueue_many(
        self, calls: Iterable[JobCall[Any]], *, connection: Connection | None = None
    ) -> list[int]:
        """Insert many jobs in one statement and one round trip; returns their ids in order.

        A unique call whose key a ready or running job holds (or an earlier
        call of the batch) gets that job's id.

        Example:
            >>> ids = await broker.enqueue_many(say_hello(n) for n in names)  # doctest: +SKIP
        """
        return await self._enqueue(list(calls), "job calls", connection)

    async def _enqueue(
        self, calls: list[JobCall[Any]], wanted: str, connection: Connection | None
    ) -> list[int]:
        for call in calls:
            if not isinstance(call, JobCall):
                raise TypeError(f"enqueue needs {wanted} such as my_job(1, 2), got {call!r}")
            call.consume()
        if synchronous.enabled():
            return await synchronous.run_calls(calls, self, connection)
        if not calls:
            return []
        target: Executor = connection if connection is not None else self.pool
        observer = instrumentation.observer
        if observer is None:
            return await self._insert(target, calls, None)
        with observer.enqueue(calls) as (trace_context, inserted):
            ids = await self._insert(target, calls, trace_context)
            inserted(ids)
        return ids

    async def _insert(
        self, target: Executor, calls: list[JobCall[Any]], trace_context: str | None
    ) -> list[int]:
        insert = insert_for(calls, self.serializer, trace_context)
        if copies(insert) and isinstance(target, asyncpg.Pool):
            # In a transaction of its own only: its ids are read back by xmin,
            # which a caller's savepoint would change.
            async with target.acquire() as connection:
                return await copy_jobs(connection, insert)
        rows = await target.fetch(QUERIES[insert.query], *insert.parameters)
        return ids_from(insert, calls, rows)

    # -- inspect and control ----------------------------------------------------

    async def get_job(self, job_id: int) -> Job | None:
        """The job with ``job_id``, or ``None`` if there is none.

        Example:
            >>> job = await broker.get_job(job_id)  # doctest: +SKIP
            >>> job.status  # doctest: +SKIP
            <Status.DONE: 'done'>
        """
        row = await self.pool.fetchrow(QUERIES["get_job"], job_id)
        return None if row is None else Job.from_row(row, self.serializer.load_result)

    async def wait(
        self, job_id: int, timeout: float | None = None, *, recheck: float = DEFAULT_RECHECK
    ) -> Job:
        """Wait until the job is ``done``, ``failed`` or ``cancelled``, and return it.

        Woken by a notification when the job's outcome is written (the
        broker opens its LISTEN connection for it, once), not by polling;
        it also looks every ``recheck`` seconds, so a lost notification
        only delays the answer. Past ``timeout`` seconds (``None``: no
        limit) it raises ``TimeoutError``; the job runs on. An id that
        names no job raises ``LookupError`` at once. A job that is retried
        is waited for until its last attempt.

        Example:
            >>> job_id = await broker.enqueue(make_thumbnail("cat.png"))  # doctest: +SKIP
            >>> job = await broker.wait(job_id, timeout=30)  # doctest: +SKIP
            >>> job.status, job.result  # doctest: +SKIP
            (<Status.DONE: 'done'>, 'cat.png@640')
        """
        return await self._waiters.wait(job_id, timeout, recheck)

    async def cancel(self, job_id: int) -> bool:
        """Cancel a job that has not finished; returns whether it did.

        A running job is stopped by its worker at the worker's next lease
        renewal (a plain ``def`` job's thread runs on, its result dropped).

        Example:
            >>> await broker.cancel(job_id)  # doctest: +SKIP
            True
        """
        return await self.pool.fetchval(QUERIES["cancel_job"], job_id) is not None

    async def get_workflow(self, workflow_id: int) -> WorkflowRecord | None:
        """The workflow ``workflow_id`` with its steps, or ``None`` if there is none.

        Example:
            >>> wf = await broker.get_workflow(run.id)  # doctest: +SKIP
            >>> wf.status, {name: job.status for name, job in wf.steps.items()}  # doctest: +SKIP
            (<Status.DONE: 'done'>, {'fetch': <Status.DONE: 'done'>, ...})
        """
        return await get_workflow(self, workflow_id)

    async def cancel_workflow(self, workflow_id: int) -> int:
        """Cancel every unfinished step of a workflow; returns how many.

        A running step is stopped as :meth:`cancel` stops a job.

        Example:
            >>> await broker.cancel_workflow(run.id)  # doctest: +SKIP
            3
        """
        rows = await self.pool.fetch(QUERIES["cancel_workflow"], workflow_id)
        return len(rows)

    async def retry_job(self, job_id: int) -> bool:
        """Run a finished (failed, cancelled or done) job again, with fresh attempts.

        Not while another job holds its unique key (:meth:`unique_holder` says which),
        nor a workflow step still waiting for an upstream step. Retrying a step makes
        the steps its failure cancelled wait for it again.

        Example:
            >>> await broker.retry_job(job_id)  # doctest: +SKIP
            True
        """
        try:
            row = await self.pool.fetchrow(QUERIES["retry_job"], job_id)
        except asyncpg.UniqueViolationError:
            # Its key was taken by a job not yet committed when the statement
            # looked (the index sees what the snapshot did not).
            return False
        if row is None:
            return False
        await self.pool.execute(QUERIES["notify_queue"], row["queue"])
        return True

    async def retry_many(
        self,
        queue: str | None = None,
        name: str | None = None,
        status: Status | str | Sequence[Status | str] | None = "failed",
        **more: Any,
    ) -> int:
        """Retry every finished job of ``status`` (``None``: any finished one), ``queue`` and
        ``name``; returns how many. In batches that never wait for a worker's row
        (:mod:`koyojobs.bulk_actions`); ``name_prefix=``, ``names=`` and ``ids=`` narrow further.

        Example:
            >>> await broker.retry_many(queue="emails", status="failed")  # doctest: +SKIP
            5000
        """
        return await self._bulk("retry", queue, name, status, more)

    async def cancel_many(
        self,
        queue: str | None = None,
        name: str | None = None,
        status: Status | str | Sequence[Status | str] | None = None,
        **more: Any,
    ) -> int:
        """Cancel every pending, ready or running job (or only those of ``status``) of
        ``queue`` and ``name``; returns how many. As :meth:`retry_many`, in batches; a
        workflow step's dependents are cancelled with it, as :meth:`cancel` does.

        Example:
            >>> await broker.cancel_many(queue="reports")  # doctest: +SKIP
            120
        """
        return await self._bulk("cancel", queue, name, status, more)

    async def delete_many(
        self,
        queue: str | None = None,
        name: str | None = None,
        status: Status | str | Sequence[Status | str] | None = "failed",
        **more: Any,
    ) -> int:
        """Delete every job of ``status`` (pending, ready or finished; never a running one),
        ``queue`` and ``name``; returns how many. As :meth:`retry_many`, in batches; a
        workflow step deleted before it ended cancels its dependents.

        Example:
            >>> await broker.delete_many(queue="emails", status="cancelled")  # doctest: +SKIP
            42
        """
        return await self._bulk("delete", queue, name, status, more)

    async def _bulk(
        self,
        action: str,
        queue: str | None,
        name: str | None,
        status: Status | str | Sequence[Status | str] | None,
        more: dict[str, Any],
    ) -> int:
        batch = more.pop("batch", bulk_actions.BATCH)
        statuses = [status] if isinstance(status, Status | str) else status
        selection = bulk_actions.Selection(statuses=statuses, queue=queue, name=name, **more)
        return await bulk_actions.run_bulk(self, action, selection, batch)

    async def job_status(self, job_id: int) -> Status | None:
        """The status of job ``job_id`` alone (``None``: no such job); no payload is read.

        Example:
            >>> await broker.job_status(job_id)  # doctest: +SKIP
            <Status.FAILED: 'failed'>
        """
        found: str | None = await self.pool.fetchval(QUERIES["job_status"], job_id)
        return None if found is None else Status(found)

    async def unique_holder(self, job_id: int) -> int | None:
        """The id of another unfinished job (pending too) holding job ``job_id``'s unique key.

        Example:
            >>> await broker.unique_holder(failed_job_id)  # doctest: +SKIP
            1042
        """
        holder: int | None = await self.pool.fetchval(QUERIES["unique_holder"], job_id)
        return holder

    async def pause(self, queue: str) -> None:
        """Stop the workers of ``queue``, in every process, from claiming its jobs.

        Stored: it holds from this call's commit on, and outlives restarts.
        Running jobs finish; enqueueing goes on. See :meth:`resume`.

        Example:
            >>> await broker.pause("emails")  # doctest: +SKIP
        """
        await self.pool.execute(QUERIES["pause_queue"], _queue_name(queue, "pause"))

    async def resume(self, queue: str) -> None:
        """Let the workers of a paused ``queue`` claim again; they wake at once.

        Example:
            >>> await broker.resume("emails")  # doctest: +SKIP
        """
        await self.pool.execute(QUERIES["resume_queue"], _queue_name(queue, "resume"))

    async def workers(self) -> list[WorkerProcess]:
        """Every live worker process (seen within three heartbeats), by host and pid.

        Example:
            >>> [(w.host, w.queues, w.running) for w in await broker.workers()]  # doctest: +SKIP
            [('web-1', ['default', 'emails'], 3)]
        """
        rows = await self.pool.fetch(QUERIES["live_workers"])
        return [WorkerProcess(**dict(row)) for row in rows]

    async def queue_known(self, queue: str) -> bool:
        """Whether any job, pause or live worker has named ``queue`` (a typo has not).

        Example:
            >>> await broker.queue_known("emials")  # doctest: +SKIP
            False
        """
        known: bool = await self.pool.fetchval(QUERIES["queue_known"], queue)
        return known

    async def paused_queues(self) -> dict[str, DateTime]:
        """The paused queues, with when each was paused.

        Example:
            >>> list(await broker.paused_queues())  # doctest: +SKIP
            ['emails']
        """
        rows = await self.pool.fetch(QUERIES["paused_queues"])
        return {row["queue"]: pendulum.instance(row["paused_at"]) for row in rows}

    async def prune(self, older_than: float) -> int:
        """Delete jobs that finished more than ``older_than`` seconds ago; returns how many.

        Finished jobs stay in the table (for ``get_job`` and results) until
        pruned; run this on a schedule (``koyojobs prune --older-than 7d``).

        Example:
            >>> await broker.prune(older_than=7 * 24 * 3600)  # doctest: +SKIP
            1204
        """
        if not is_seconds(older_than, zero=True):
            raise ValueError(f"prune() older_than must be seconds >= 0, got {older_than!r}")
        deleted: int = await self.pool.fetchval(QUERIES["prune_jobs"], float(older_than))
        return deleted

    async def prune_expired(self, limit: int = BATCH) -> int:
        """Delete at most ``limit`` finished jobs older than :attr:`retention` says; how many.

        Running workers call this on their own (see :mod:`koyojobs.retention`).
        It deletes nothing while another process prunes, and never touches
        ``ready`` or ``running`` jobs.

        Example:
            >>> while await broker.prune_expired(1000) == 1000:  # doctest: +SKIP
            ...     pass
        """
        if not is_count(limit):
            raise ValueError(f"prune_expired() limit must be an int >= 1, got {limit!r}")
        seconds = expired_ages(self.retention)
        if seconds is None:
            return 0
        least = min(s for s in seconds if s is not None)
        deleted: int = await self.pool.fetchval(QUERIES["prune_expired"], least, *seconds, limit)
        return deleted

    async def prunable(self, older_than: float) -> dict[Status, int]:
        """What :meth:`prune` would delete now: finished jobs per status (0 included).

        Example:
            >>> await broker.prunable(older_than=7 * 24 * 3600)  # doctest: +SKIP
            {<Status.DONE: 'done'>: 1200, <Status.FAILED: 'failed'>: 4, ...}
        """
        if not is_seconds(older_than, zero=True):
            raise ValueError(f"prunable() older_than must be seconds >= 0, got {older_than!r}")
        rows = await self.pool.fetch(QUERIES["count_prunable"], float(older_than))
        counts = {Status(row["status"]): int(row["jobs"]) for row in rows}
        return {s: counts.get(s, 0) for s in (Status.DONE, Status.FAILED, Status.CANCELLED)}

    async def apply_migrations(self) -> list[int]:
        """Create or upgrade the schema now; returns the versions applied.

        What :meth:`start` does unless ``migrate=False``: for a broker that
        must not migrate on its own (``koyojobs migrate`` uses it).

        Example:
            >>> await broker.apply_migrations()  # doctest: +SKIP
            [7]
        """
        return await migrate(self.pool)

    async def database_now(self) -> DateTime:
        """The database's clock, which decides when jobs and ticks are due.

        Example:
            >>> (await broker.database_now()).year  # doctest: +SKIP
            2026
        """
        now: datetime = await self.pool.fetchval(QUERIES["database_now"])
        return pendulum.instance(now)

    async def schedule_states(self, names: Sequence[str]) -> dict[str, ScheduleState]:
        """What the database knows of the ticks of the periodic jobs ``names``, by name.

        A periodic job no worker has ticked yet is missing from the answer.

        Example:
            >>> states = await broker.schedule_states(["app.nightly"])  # doctest: +SKIP
            >>> states["app.nightly"].last_tick  # doctest: +SKIP
            DateTime(2026, 12, 5, 3, 0, 0, tzinfo=Timezone('UTC'))
        """
        rows = await self.pool.fetch(QUERIES["schedules"], list(names))
        return {row["name"]: ScheduleState(**dict(row)) for row in rows}

    async def queue_status(self) -> list[QueueStatus]:
        """Per queue: job counts by status (``pending`` steps too), the oldest due job's age.

        Example:
            >>> [q.queue for q in await broker.queue_status()]  # doctest: +SKIP
            ['default', 'emails']
        """
        rows = await self.pool.fetch(QUERIES["queue_status"])
        return [QueueStatus(**dict(row)) for row in rows]

    async def list_jobs(
        self, *, status: Status | str | None = None, queue: str | None = None, limit: int = 20
    ) -> list[Job]:
        """The newest jobs, optionally of one ``status`` and one ``queue``.

        Example:
            >>> failed = await broker.list_jobs(status="failed", limit=5)  # doctest: +SKIP
        """
        if status is not None:
            status = Status(status).value
        rows = await self.pool.fetch(QUERIES["list_jobs"], status, queue, limit)
        return [Job.from_row(row, self._loads_or_keep) for row in rows]

    def _loads_or_keep(self, payload: bytes, job: str) -> Any:
        # Listing must not fail for one unreadable result: show the reason instead.
        try:
            return self.serializer.load_result(payload, job)
        except PayloadError as exc:
            return exc

    def __repr__(self) -> str:
        return f"<Broker {self.database!r} started={self._started}>"


def _queue_name(queue: object, method: str) -> str:
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"{method}() needs a queue name (a non-empty str), got {queue!r}")
    return queue
