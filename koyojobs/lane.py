"""One claim loop of a worker: claim, run, write back.

Each round is one statement on the loop's own connection: it writes the
outcomes buffered since the last round and claims as many due jobs as there
are free slots, and those its slots will free while a round is in flight
(see :mod:`koyojobs.distance`). Each run adds its outcome to that buffer and wakes the loop.
Between rounds, the loop's :class:`~koyojobs.leases.Leases` renew what it
holds, one loop per worker runs the :class:`~koyojobs.rescue.Rescue`, and the
:class:`~koyojobs.maintenance.Vacuum` looks at the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import asyncpg

from . import progress
from ._text import escape_controls
from .distance import FAR, Pace, round_trip
from .errors import describe, log_trouble
from .execution import attempt
from .leases import TIMER_SLACK, Leases, Run, TrackedExecutor, exit_for_lost_lease, stop_run
from .lifecycle import cancel_and_wait, raise_if_stopping
from .maintenance import Vacuum
from .models import Status
from .outcomes import Decision, Outcome, as_columns, first_batch, unreadable, unstorable
from .rescue import Rescue
from .sql import QUERIES

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["Lane"]

log = logging.getLogger("koyojobs.worker")

_MAX_ERROR_DELAY = 5.0
_OVERDUE_RECHECK = 0.05
_WRITE_TRIES_AT_STOP = 5
_REPEAT_WARNING_EVERY = 60.0
_MAX_BATCH_BYTES = 4 * 1024 * 1024
_REFUSALS = frozenset({"22", "23", "54", "0A", "P0"})
"""SQLSTATE classes of a statement refused for its data: data exceptions, integrity
violations, program limits, unsupported features, PL/pgSQL errors (a trigger's)."""


class Lane:
    """One claim loop of a worker: its share of the slots, its own connection."""

    def __init__(self, worker: Worker, *, slots: int, lane_id: str, rescues: bool) -> None:
        # Settings are the worker's (self.worker.lease...): only the slots are the lane's.
        self.worker = worker
        self.broker = worker.broker
        self.queue = worker.queue
        self.pool_size = slots
        self.id = lane_id
        self.rescue = (
            Rescue(worker.broker.database, worker.poll_interval, worker.deadline)
            if rescues
            else None
        )
        self.siblings: list[Lane] = []
        self._runs: dict[int, Run] = {}
        self.leases = Leases(
            worker.lease,
            self._runs,
            self._fetch,
            lane_id,
            on_lost_thread=exit_for_lost_lease if worker.exit_on_lost_lease else None,
        )
        self._decisions: list[Outcome] = []
        self.pace = Pace(slots)
        """What to claim beyond the free slots: the round time against the jobs' run time."""
        self._slots: asyncio.Semaphore | None = None
        self._steps: set[int] = set()
        """Claimed workflow steps whose outcome is not yet written."""
        self._one_at_a_time = 0
        """Rounds left that write one outcome each, to find one the database refuses."""
        self._conn: asyncpg.Connection | None = None
        self._conn_lock = asyncio.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake: asyncio.Event | None = None
        self.stopping = False
        self._vacuum_task: asyncio.Task[None] | None = None

    # -- life -------------------------------------------------------------

    def start(self, executor: ThreadPoolExecutor) -> None:
        self.stopping = False
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(self.pool_size)
        self._executor = executor
        self._tasks = [asyncio.create_task(self._main_loop(), name=f"koyojobs-main-{self.queue}")]
        self.leases.start(self.queue)

    async def stop(self) -> int:
        """Stop as :meth:`Worker.stop` says; returns how many runs were put back."""
        if not self._tasks:
            return 0
        [main] = self._tasks
        grace = self.worker.shutdown_grace
        grace_ends = time.monotonic() + grace
        self.stopping = True
        self.wake()
        # The main loop ends by itself after its round in flight (cancelling it
        # could lose the answer to a claim, whose jobs would then spend an
        # attempt without running); a round ends within its deadline (twice,
        # with a reconnect), so however short the grace, it gets that long.
        await asyncio.wait([main], timeout=max(grace, 2 * self.worker.deadline + 1.0))
        if not main.done():
            await cancel_and_wait(main)
            self._drop_connection()  # a round was cut short: its state is unknown
        runs = list(self._runs.values())
        if runs:
            remaining = max(0.0, grace_ends - time.monotonic())
            await asyncio.wait([r.task for r in runs], timeout=remaining)
        unfinished = dict(self._runs)
        for run in self._runs.values():
            run.cancelled = True
            run.task.cancel()
        await asyncio.gather(*(r.task for r in runs), return_exceptions=True)
        # An async run is stopped now; a thread is not, and may run until the
        # process ends: its job stays running for a lease more (the rescue puts
        # it back), so that no other worker starts it, nor another job of its
        # concurrency key in its slot, while it may still run here.
        threaded = [job_id for job_id, run in unfinished.items() if run.thread_alive()]
        await self.leases.stop()
        if self._vacuum_task is not None:
            # What a cut-short VACUUM cleaned stays clean.
            await cancel_and_wait(self._vacuum_task)
            self._vacuum_task = None
        await self._write_remaining()
        self._drop_connection()
        if unfinished:
            await self._release(list(unfinished), threaded)
        self._tasks = []
        return len(unfinished)

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    @property
    def running(self) -> int:
        return len(self._runs)

    @property
    def free(self) -> int:
        """Jobs the next round may claim: the free slots, and those claimed ahead.

        Not ahead in a queue with limits: a job claimed ahead holds its key's
        limit while it waits for a slot, which a worker with a free slot could use.
        """
        ahead = 0 if self.worker.limited else self.pace.ahead
        # Never below zero: runs claimed ahead when the pace allowed more, or a
        # stale run beside its new one, can outnumber the slots and today's
        # ahead. A negative LIMIT is refused as bad data, and the outcomes
        # riding on that round were then stored as failed.
        return max(0, self.pool_size + ahead - len(self._runs))

    # -- claiming -----------------------------------------------------------

    async def _main_loop(self) -> None:
        assert self._wake is not None
        failures = 0
        warn_again = 0.0
        while not self.stopping:
            timeout = self.worker.poll_interval
            try:
                # Cleared before the round: a NOTIFY or a finished run during it
                # wakes the next one.
                self._wake.clear()
                free = self.free
                if free > 0 or self._decisions:
                    claimed = await self._exchange(free)
                    if claimed < free:
                        if claimed:
                            # Let the jobs just claimed start before this round trip.
                            await asyncio.sleep(0)
                        timeout = await self._until_due(timeout)
                # After the claim, so that a woken worker starts its job first.
                if self.rescue is not None:
                    await self.rescue.run_if_due(self._fetch)
                await self._look_after_table()
                if failures:
                    log.warning(
                        "claiming again", extra={"queue": self.queue, "failed_rounds": failures}
                    )
                    self.worker.recovered()
                failures = 0
            except Exception as exc:
                raise_if_stopping(exc)
                failures += 1
                timeout = min(_MAX_ERROR_DELAY, 0.05 * 2**failures, self.worker.poll_interval)
                # Once when it starts, then once a minute while it lasts: an
                # outage must show in the log without flooding it.
                if failures == 1 or time.monotonic() >= warn_again:
                    warn_again = time.monotonic() + _REPEAT_WARNING_EVERY
                    log_trouble(
                        log,
                        "claim failed; retrying",
                        exc,
                        queue=self.queue,
                        retry_in=timeout,
                        failed_rounds=failures,
                    )
            if self.stopping:
                break
            # asyncio.timeout, not wait_for: no task of its own, so a wake-up
            # reaches the next round a few loop iterations sooner.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _exchange(self, free: int) -> int:
        """One round trip: write buffered outcomes, claim up to ``free`` jobs and start them."""
        # Bounded batches: a round trip must fit in its deadline, and one
        # outcome the database refuses must not hold back the others.
        take = 1 if self._one_at_a_time else first_batch(self._decisions, _MAX_BATCH_BYTES)
        batch, self._decisions = self._decisions[:take], self._decisions[take:]
        # A queue with limited jobs claims through koyojobs_limited_take.
        query = QUERIES["finish_and_claim_limited" if self.worker.limited else "finish_and_claim"]
        sent = time.monotonic()
        connection = self._conn
        try:
            rows = await self._fetch(
                query, self.queue, free, self.worker.lease, self.id, *as_columns(batch)
            )
            if connection is not None and connection is self._conn:
                # A round on the connection it had (no connecting in it).
                self.pace.round_took(time.monotonic() - sent)
        except asyncpg.PostgresError as exc:
            self._decisions[:0] = self._refused(batch, exc)
            raise
        except BaseException:
            # Writing is idempotent (guarded by attempt and status): keep the
            # batch for the next round.
            self._decisions[:0] = batch
            raise
        if self._one_at_a_time:
            self._one_at_a_time -= 1
        for job_id, number, decision in batch:
            self.leases.let_go(job_id, number)
            if decision.status is Status.READY:
                self.wake()  # a retry may be due before the next poll
            elif job_id in self._steps:
                # Its outcome may have released steps (often of this queue):
                # claim again now, not when its NOTIFY comes back around.
                self._steps.discard(job_id)
                self.wake()
        if len(rows) > 1:
            # The claim returns its rows in id order; jobs start (and those
            # claimed ahead take the slots that free) in the queue's order.
            rows = sorted(rows, key=lambda r: (r["priority"], r["scheduled_at"], r["id"]))
        for row in rows:
            # A job this worker still runs (in this claim loop or the other)
            # may come back: its lease lapsed while the event loop was stalled,
            # and it was rescued. Stop the stale run, and start the new one once
            # it is gone, so the two never overlap.
            stale = self._runs.get(row["id"])
            for sibling in self.siblings:
                stale = stale or sibling._runs.get(row["id"])
            if stale is not None:
                stop_run(stale)
            if row["workflow_id"] is not None:
                self._steps.add(row["id"])
            task = asyncio.create_task(self._run(row, None if stale is None else stale.task))
            self._runs[row["id"]] = Run(task, sent + self.worker.lease)
            self.leases.hold(row["id"], row["attempts"], sent + self.worker.lease)
        if rows and len(rows) == free:
            for sibling in self.siblings:
                sibling.wake()  # all it asked for: more may be waiting
        return len(rows)

    def _refused(self, batch: list[Outcome], exc: asyncpg.PostgresError) -> list[Outcome]:
        """What to write next after the database refused ``batch``'s statement.

        A refusal of the data itself (a value out of range, a trigger's
        error) would come back every round: the batch is split into single
        outcomes, and a lone refused outcome becomes ``failed`` saying why
        (or, refused again, is let go: the job runs again once its lease
        lapses). Anything else (a timeout, a restart) keeps the batch.
        """
        if exc.sqlstate is None or exc.sqlstate[:2] not in _REFUSALS or not batch:
            return batch
        if len(batch) > 1:
            self._one_at_a_time = len(batch)
            return batch
        job_id, number, decision = batch[0]
        reason = describe(exc)
        if decision.error is not None and decision.error.startswith("the outcome could not"):
            log.error(
                "the outcome of a job could not be stored; it runs again when its lease lapses",
                extra={"job_id": job_id, "error": reason},
            )
            self.leases.let_go(job_id, number)
            self._steps.discard(job_id)
            return []
        log.warning(
            "the database refused a job's outcome; storing it as failed",
            extra={"job_id": job_id, "error": reason},
        )
        return [(job_id, number, unstorable(decision, reason))]

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run one of the main loop's statements on the worker's own connection.

        The loop sends one statement at a time, so it holds a connection of
        its own: no pool round, and settings fit for exactly these statements.
        Lease renewals go through it too, between the loop's rounds: they
        must not wait for a pool whose connections the jobs may all hold.
        Their generic plans are as good as custom ones, which cost more to
        plan than the statements cost to run, and PostgreSQL cannot tell
        (it prices the claim's LIMIT $2 at a tenth of the table).

        Every round trip has a deadline: a connection that stops answering
        without closing (a dropped network path) would otherwise hold the
        loop until TCP gives up, many minutes later. Past it, the connection
        is dropped and the next round opens another. The same bound runs on
        the server as ``statement_timeout``, so a statement stuck there ends
        too (not behind a pooler, which would hand the setting to others).
        """
        async with self._conn_lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await self.broker.database.connect(
                    timeout=self.worker.deadline,
                    role="koyojobs-worker",
                    settings={
                        "plan_cache_mode": "force_generic_plan",
                        "statement_timeout": str(int(self.worker.deadline * 1000)),
                    },
                )
                await self._measure_distance(self._conn)
            try:
                async with asyncio.timeout(self.worker.deadline):
                    return await self._conn.fetch(query, *args)
            except TimeoutError:
                self._drop_connection()
                raise TimeoutError(
                    f"the database did not answer within {self.worker.deadline:g}s; reconnecting"
                ) from None
            except (
                OSError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,  # a connection left mid-operation by a cut
                asyncpg.PostgresConnectionError,
            ):
                self._drop_connection()
                raise

    async def _measure_distance(self, conn: asyncpg.Connection) -> None:
        async with asyncio.timeout(self.worker.deadline):
            seconds = await round_trip(conn)
        self.pace.connected(seconds)
        if seconds >= FAR:
            log.info(
                "far from the database: claiming ahead",
                extra={"queue": self.queue, "round_trip_ms": round(seconds * 1000, 2)},
            )

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _until_due(self, timeout: float) -> float:
        if self.worker.limited:
            rows = await self._fetch(
                QUERIES["next_due_limited"], self.queue, self.worker.limited_jobs
            )
        else:
            rows = await self._fetch(QUERIES["next_due"], self.queue)
        due: float | None = rows[0][0]
        if due is None:
            return timeout
        if due <= 0:
            # Due but not claimed: another worker holds the rows while it claims them.
            return min(timeout, _OVERDUE_RECHECK)
        return min(timeout, due)

    async def _look_after_table(self) -> None:
        try:
            task = await Vacuum.of(self.broker).check(
                self.worker.vacuum_threshold, self._fetch, self.broker
            )
        except Exception as exc:
            log_trouble(log, "counting the jobs table's dead rows failed", exc, queue=self.queue)
            return
        if task is not None:
            self._vacuum_task = task

    # -- running ------------------------------------------------------------

    async def _run(self, row: asyncpg.Record, stale: asyncio.Task[None] | None = None) -> None:
        job_id: int = row["id"]
        this = self._runs[job_id]
        assert self._executor is not None
        assert self._slots is not None
        decision: Decision | None = None
        slot = False
        try:
            if stale is not None:
                await asyncio.wait([stale])
            # Claimed ahead (far from the database): wait for a free slot.
            await self._slots.acquire()
            slot = True
            # A job that blocks the event loop delays the claim's answer or this
            # first step: the lease may lapse before the run begins, and from
            # then on another worker may hold the job. Never begin it then.
            if this.cancelled or time.monotonic() + TIMER_SLACK >= this.lease_deadline:
                this.cancelled = True
                await self._put_back_unbegun(row)
            else:
                this.begun = True
                started = time.monotonic()
                executor = TrackedExecutor(self._executor, this)
                progress.bind(this.progress)  # this task's own context
                decision = await attempt(row, self.broker.serializer, self.broker, executor)
                await _until_threads_end(this, row)
        except asyncio.CancelledError:
            # Stopped by stop() (released afterwards) or because the job is no
            # longer ours (cancelled or rescued): nothing to record.
            self.leases.let_go(job_id, row["attempts"])
            self._steps.discard(job_id)
            return
        except Exception as exc:
            # attempt() decides for every row; should it raise all the same, the
            # job must still end: a held job's lease is renewed for ever.
            log.exception("attempt raised", extra={"job_id": job_id})
            decision = unreadable(f"job could not be run: {type(exc).__name__}")
        finally:
            if slot:
                self._slots.release()
            run = self._runs.get(job_id)
            if run is not None and run.task is asyncio.current_task():
                del self._runs[job_id]
            else:
                run = None  # a newer claim of the job owns the entry
            self.wake()
        if run is None or run.cancelled or decision is None:
            self.leases.let_go(job_id, row["attempts"])
            self._steps.discard(job_id)
            return
        if this.progress.fraction is not None:
            decision = dataclasses.replace(
                decision,
                progress=this.progress.fraction,
                progress_message=this.progress.message,
            )
        self._decisions.append((job_id, row["attempts"], decision))
        seconds = time.monotonic() - started
        self.pace.ran(seconds)
        _log_outcome(row, decision, seconds)

    async def _put_back_unbegun(self, row: asyncpg.Record) -> None:
        # It never ran, so it does not count as an attempt (as a run cut short
        # by stop()); if a rescue got there first, the rescue counted it.
        log.warning(
            "lease lapsed before the job began; putting it back",
            extra={"job_id": row["id"], "attempt": row["attempts"]},
        )
        try:
            database = self.broker.database
            put_back = await database.fetch_within(
                self.worker.deadline,
                QUERIES["release_unbegun"],
                row["id"],
                row["attempts"],
                self.id,
            )
            if put_back:
                await database.fetch_within(
                    self.worker.deadline, QUERIES["notify_queue"], put_back[0]["queue"]
                )
        except Exception as exc:
            log_trouble(
                log,
                "could not put the job back; it returns when its lease lapses",
                exc,
                job_id=row["id"],
            )

    # -- stopping -----------------------------------------------------------

    async def _write_remaining(self) -> None:
        failures = 0
        # Rounds that write go on (batches are bounded); failed ones are counted.
        while self._decisions and failures < _WRITE_TRIES_AT_STOP:
            try:
                await self._exchange(0)
            except Exception as exc:
                log_trouble(log, "recording outcomes at stop failed", exc)
                # The database may be restarting: give it a moment before trying again.
                await asyncio.sleep(0.1 * 2**failures)
                failures += 1
        if not self._decisions:
            return
        log.error(
            "outcomes not recorded at stop; those jobs run again when their leases lapse",
            extra={"jobs": len(self._decisions)},
        )

    async def _release(self, job_ids: list[int], threaded: list[int]) -> None:
        if threaded:
            log.warning(
                "def jobs still running past the grace: they run again a lease from now",
                extra={"jobs": threaded, "delay": f"{self.worker.lease:g}s"},
            )
        try:
            database = self.broker.database
            rows = await database.fetch_within(
                self.worker.deadline,
                QUERIES["release_jobs"],
                job_ids,
                self.id,
                threaded,
                self.worker.lease,
            )
            for queue in {row["queue"] for row in rows}:
                await database.fetch_within(self.worker.deadline, QUERIES["notify_queue"], queue)
        except Exception as exc:
            log_trouble(
                log,
                "could not put unfinished jobs back; they return when their leases lapse",
                exc,
                jobs=job_ids,
            )


async def _until_threads_end(run: Run, row: asyncpg.Record) -> None:
    """Hold the job (its slot and its lease) while a thread of its attempt still runs.

    A ``def`` job past its timeout has its outcome decided, but its thread
    cannot be stopped: written now, a retry could start elsewhere while the
    thread still runs. The thread holds a pool thread anyway.
    """
    if not run.thread_alive():
        return
    log.warning(
        "the job's thread runs on past its attempt (a def job past its timeout): "
        "its outcome is written once the thread returns",
        extra={"job_id": row["id"], "attempt": row["attempts"]},
    )
    await asyncio.wait([asyncio.wrap_future(f) for f in run.threads if not f.done()])


def _log_outcome(row: asyncpg.Record, decision: Decision, seconds: float) -> None:
    # One line per finished attempt: INFO when done or retried, WARNING when failed.
    level = logging.WARNING if decision.status is Status.FAILED else logging.INFO
    if not log.isEnabledFor(level):
        return
    # Escaped here too, not only by koyojobs' own formatter: an app's handler
    # writes these as they are, and a job's name must not start a new line.
    extra = {
        "job_id": row["id"],
        "job": escape_controls(row["name"]),
        "queue": escape_controls(row["queue"]),
        "attempt": row["attempts"],
        "duration": f"{seconds:.3f}s",
    }
    if decision.status is Status.DONE:
        log.info("job done", extra=extra)
    elif decision.snoozed:
        log.info("job snoozed", extra={**extra, "retry_in": f"{decision.delay:.1f}s"})
    elif decision.status is Status.READY:
        log.info(
            "job attempt failed; will retry",
            extra={
                **extra,
                "error": _escaped(decision.error),
                "retry_in": f"{decision.delay:.1f}s",
            },
        )
    else:
        log.warning("job failed", extra={**extra, "error": _escaped(decision.error)})


def _escaped(text: str | None) -> str | None:
    return None if text is None else escape_controls(text)
