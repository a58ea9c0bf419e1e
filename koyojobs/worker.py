"""``Worker``: claims jobs of one queue in batches, runs them, records outcomes.

Two loops share the work. The main loop sends one statement per round that
writes back the outcomes buffered since the last round and claims as many
due jobs as there are free slots; each run adds its outcome to that buffer
and wakes the loop. The heartbeat renews the leases of what is held (and
stops what is no longer held).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from .broker import Broker
from .errors import describe
from .execution import attempt, warn_if_unsigned
from .lifecycle import Lifecycle, cancel_and_wait
from .limits import limited_jobs, register_limits
from .maintenance import Vacuum
from .models import Status
from .outcomes import Decision, Outcome, as_columns, first_batch, unreadable, unstorable
from .periodic import Ticker
from .retention import Pruner
from .sql import QUERIES

__all__ = ["Worker"]

log = logging.getLogger("koyojobs.worker")

_MAX_ERROR_DELAY = 5.0
_OVERDUE_RECHECK = 0.05
_WRITE_TRIES_AT_STOP = 5
_TIMER_SLACK = 0.01
_TWO_LANES_FROM = 16
_MIN_DEADLINE = 2.0
_MAX_DEADLINE = 10.0
_REPEAT_WARNING_EVERY = 60.0
_MAX_BATCH_BYTES = 4 * 1024 * 1024
_REFUSALS = frozenset({"22", "23", "54", "0A", "P0"})
"""SQLSTATE classes of a statement refused for its data: data exceptions, integrity
violations, program limits, unsupported features, PL/pgSQL errors (a trigger's)."""


@dataclass(eq=False)
class _Run:
    task: asyncio.Task[None]
    lease_deadline: float
    """Monotonic time after which another worker may have rescued the job."""
    cancelled: bool = field(default=False)
    """Set when the worker stops the run itself: its outcome is not recorded."""
    begun: bool = field(default=False)
    """Set when the job itself starts; until then, stop the run with :func:`_stop_run`."""


def _stop_run(run: _Run) -> None:
    run.cancelled = True
    # A run that has not begun the job sees ``cancelled`` before it would, and
    # puts the job back. Cancelling its task instead could lose that: a task
    # cancelled before its first step never runs its body, clean-up included
    # (its slot and its hold on the job, which the heartbeat would keep renewing).
    if run.begun:
        run.task.cancel()


class Worker(Lifecycle):
    """Runs the jobs of one queue, at most ``pool_size`` at once.

    ``lease`` is how long a claimed job stays this worker's without a renewal
    (renewed every third of it); ``poll_interval`` bounds the wait between
    looks at the table when no notification arrives, and paces the rescue of
    lapsed leases; ``shutdown_grace`` is how long :meth:`stop` lets running
    jobs finish before putting them back. Once the jobs table holds more than
    ``vacuum_threshold`` dead row versions, a worker VACUUMs it, so claims
    stay fast through a long drain (``None``: leave it to autovacuum; see
    the Operations page).

    The worker also enqueues the ticks of the periodic jobs of its queue
    that this process has imported (see :mod:`koyojobs.periodic`).

    From ``pool_size`` 16 up, the slots are split between two claim loops,
    each with its own connection: while one waits for PostgreSQL, the other's
    jobs run, so the worker's Python and the database work at once.

    Example:
        >>> from koyojobs import Broker, Worker
        >>> async with Broker(dsn) as broker:  # doctest: +SKIP
        ...     async with Worker(broker, queue="emails", pool_size=4):
        ...         await asyncio.Event().wait()
    """

    def __init__(
        self,
        broker: Broker,
        queue: str = "default",
        pool_size: int = 8,
        lease: float = 30.0,
        poll_interval: float = 5.0,
        shutdown_grace: float = 10.0,
        vacuum_threshold: int | None = 50_000,
    ) -> None:
        if not isinstance(broker, Broker):
            raise TypeError(f"Worker needs a Broker, got {broker!r}")
        if not isinstance(queue, str) or not queue:
            raise ValueError(f"Worker queue must be a non-empty string, got {queue!r}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"Worker pool_size must be an int >= 1, got {pool_size!r}")
        for option, value in (("lease", lease), ("poll_interval", poll_interval)):
            if not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"Worker {option} must be seconds > 0, got {value!r}")
        if not isinstance(shutdown_grace, int | float) or shutdown_grace < 0:
            raise ValueError(f"Worker shutdown_grace must be seconds >= 0, got {shutdown_grace!r}")
        if vacuum_threshold is not None and (
            isinstance(vacuum_threshold, bool)
            or not isinstance(vacuum_threshold, int)
            or vacuum_threshold < 1
        ):
            raise ValueError(
                f"Worker vacuum_threshold must be an int >= 1 or None, got {vacuum_threshold!r}"
            )
        self.broker = broker
        self.queue = queue
        self.pool_size = pool_size
        self.lease = float(lease)
        self.poll_interval = float(poll_interval)
        self.shutdown_grace = float(shutdown_grace)
        self.vacuum_threshold = vacuum_threshold
        # A bound on every round trip to the database: well inside the lease,
        # so a hung renewal is noticed before the lease lapses, but not so
        # tight that a busy server trips it.
        self.deadline = min(_MAX_DEADLINE, max(_MIN_DEADLINE, self.lease / 3))
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        lanes = 2 if pool_size >= _TWO_LANES_FROM else 1
        self._lanes = [
            _Lane(
                self,
                slots=pool_size // lanes + (1 if i < pool_size % lanes else 0),
                lane_id=self.id if lanes == 1 else f"{self.id}/{i}",
                rescues=i == 0,
            )
            for i in range(lanes)
        ]
        for lane in self._lanes:
            lane.siblings = [other for other in self._lanes if other is not lane]
        self.limited_jobs: list[str] = []
        """The names of the queue's jobs with a limit, as this process defines them (at start)."""
        self._executor: ThreadPoolExecutor | None = None
        self._ticker: Ticker | None = None
        self._pruner: Pruner | None = None

    async def start(self) -> None:
        """Subscribe to the queue's wake-ups and start claiming."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(
            self.pool_size, thread_name_prefix=f"koyojobs-{self.queue}"
        )
        try:
            # The limits this process knows, declared before its first claim.
            self.limited_jobs = limited_jobs(self.queue)
            await register_limits(self.broker.database, self.queue, self.deadline)
            # Subscribed before the claim loops: a LISTEN connection that cannot
            # open fails the start before any claim loop runs (one left running
            # could not be stopped by a caller whose start raised).
            await self.broker.subscribe(self.queue, self.wake)
        except BaseException:
            executor, self._executor = self._executor, None
            executor.shutdown(wait=False)
            raise
        for lane in self._lanes:
            lane.start(self._executor)
        self._ticker = Ticker(
            self.broker, self.queue, idle_check=self.poll_interval, deadline=self.deadline
        )
        self._ticker.start()
        self._pruner = Pruner(self.broker)
        self._pruner.start()
        warn_if_unsigned(self.broker.serializer)
        log.info("worker started", extra={"queue": self.queue, "worker_id": self.id})

    async def stop(self) -> None:
        """Stop claiming, let running jobs finish within ``shutdown_grace``, put the rest back.

        A run cut short goes back to ``ready`` and does not count as an attempt.
        """
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if self._ticker is not None:
            await self._ticker.stop()
            self._ticker = None
        if self._pruner is not None:
            await self._pruner.stop()
            self._pruner = None
        self.broker.unsubscribe(self.queue, self.wake)
        released = await asyncio.gather(*(lane.stop() for lane in self._lanes))
        # Threads cannot be stopped; their results are dropped.
        executor.shutdown(wait=False, cancel_futures=True)
        log.info("worker stopped", extra={"queue": self.queue, "released": sum(released)})

    @property
    def limited(self) -> bool:
        """Whether a job of the queue has a limit: then claims go through the
        limited claim (see :mod:`koyojobs.limits`)."""
        return bool(self.limited_jobs)

    def wake(self) -> None:
        """Look at the table now (called by the broker on NOTIFY).

        One claim loop looks, the one with the most free slots; if it fills
        them all, it wakes the other, since more jobs may be waiting.
        """
        max(self._lanes, key=lambda lane: lane.free).wake()

    @property
    def running(self) -> int:
        """How many jobs run now."""
        return sum(lane.running for lane in self._lanes)

    @property
    def stopping(self) -> bool:
        """Whether :meth:`stop` has begun."""
        return any(lane.stopping for lane in self._lanes)


class _Lane:
    """One claim loop of a worker: its share of the slots, its own connection."""

    def __init__(self, worker: Worker, *, slots: int, lane_id: str, rescues: bool) -> None:
        self.worker = worker
        self.broker = worker.broker
        self.queue = worker.queue
        self.pool_size = slots
        self.lease = worker.lease
        self.poll_interval = worker.poll_interval
        self.shutdown_grace = worker.shutdown_grace
        self.vacuum_threshold = worker.vacuum_threshold
        self.deadline = worker.deadline
        self.id = lane_id
        self.rescues = rescues
        self.siblings: list[_Lane] = []
        self._runs: dict[int, _Run] = {}
        self._held: dict[int, int] = {}
        """Job id -> attempt, claimed and not yet written back: their leases are renewed."""
        self._decisions: list[Outcome] = []
        self._one_at_a_time = 0
        """Rounds left that write one outcome each, to find one the database refuses."""
        self._conn: asyncpg.Connection | None = None
        self._conn_lock = asyncio.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._wake: asyncio.Event | None = None
        self._lease_timer: asyncio.TimerHandle | None = None
        self.stopping = False
        self._vacuum_task: asyncio.Task[None] | None = None

    # -- life -------------------------------------------------------------

    def start(self, executor: ThreadPoolExecutor) -> None:
        self.stopping = False
        self._wake = asyncio.Event()
        self._executor = executor
        self._tasks = [
            asyncio.create_task(self._main_loop(), name=f"koyojobs-main-{self.queue}"),
            asyncio.create_task(self._heartbeat_loop(), name=f"koyojobs-heartbeat-{self.queue}"),
        ]

    async def stop(self) -> int:
        """Stop as :meth:`Worker.stop` says; returns how many runs were put back."""
        if not self._tasks:
            return 0
        main, heartbeat = self._tasks
        grace_ends = time.monotonic() + self.shutdown_grace
        self.stopping = True
        self.wake()
        # The main loop ends by itself after its round in flight (cancelling it
        # could lose the answer to a claim, whose jobs would then spend an
        # attempt without running); a round ends within its deadline (twice,
        # with a reconnect), so however short the grace, it gets that long.
        await asyncio.wait([main], timeout=max(self.shutdown_grace, 2 * self.deadline + 1.0))
        if not main.done():
            await cancel_and_wait(main)
            self._drop_connection()  # a round was cut short: its state is unknown
        runs = list(self._runs.values())
        if runs:
            remaining = max(0.0, grace_ends - time.monotonic())
            await asyncio.wait([r.task for r in runs], timeout=remaining)
        unfinished = list(self._runs)
        for run in self._runs.values():
            run.cancelled = True
            run.task.cancel()
        await asyncio.gather(*(r.task for r in runs), return_exceptions=True)
        await cancel_and_wait(heartbeat)
        if self._vacuum_task is not None:
            # What a cut-short VACUUM cleaned stays clean.
            await cancel_and_wait(self._vacuum_task)
            self._vacuum_task = None
        await self._write_remaining()
        self._drop_connection()
        if unfinished:
            await self._release(unfinished)
        if self._lease_timer is not None:
            self._lease_timer.cancel()
            self._lease_timer = None
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
        return self.pool_size - len(self._runs)

    # -- claiming -----------------------------------------------------------

    async def _main_loop(self) -> None:
        assert self._wake is not None
        next_rescue = 0.0
        failures = 0
        warn_again = 0.0
        while not self.stopping:
            timeout = self.poll_interval
            try:
                # Cleared before the round: a NOTIFY or a finished run during it
                # wakes the next one.
                self._wake.clear()
                free = self.pool_size - len(self._runs)
                if free > 0 or self._decisions:
                    claimed = await self._exchange(free)
                    if claimed < free:
                        if claimed:
                            # Let the jobs just claimed start before this round trip.
                            await asyncio.sleep(0)
                        timeout = await self._until_due(timeout)
                # After the claim, so that a woken worker starts its job first.
                if self.rescues and time.monotonic() >= next_rescue:
                    next_rescue = time.monotonic() + self.poll_interval
                    await self._rescue()
                await self._look_after_table()
                if failures:
                    log.warning(
                        "claiming again", extra={"queue": self.queue, "failed_rounds": failures}
                    )
                failures = 0
            except Exception:
                failures += 1
                timeout = min(_MAX_ERROR_DELAY, 0.05 * 2**failures, self.poll_interval)
                # Once when it starts, then once a minute while it lasts: an
                # outage must show in the log without flooding it.
                if failures == 1 or time.monotonic() >= warn_again:
                    warn_again = time.monotonic() + _REPEAT_WARNING_EVERY
                    log.warning(
                        "claim failed; retrying",
                        exc_info=True,
                        extra={"queue": self.queue, "retry_in": timeout, "failed_rounds": failures},
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
        try:
            rows = await self._fetch(
                query, self.queue, free, self.lease, self.id, *as_columns(batch)
            )
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
            self._let_go(job_id, number)
            if decision.status is Status.READY:
                self.wake()  # a retry may be due before the next poll
        for row in rows:
            # A job this worker still runs (in this claim loop or the other)
            # may come back: its lease lapsed while the event loop was stalled,
            # and it was rescued. Stop the stale run, and start the new one once
            # it is gone, so the two never overlap.
            stale = self._runs.get(row["id"])
            for sibling in self.siblings:
                stale = stale or sibling._runs.get(row["id"])
            if stale is not None:
                _stop_run(stale)
            task = asyncio.create_task(self._run(row, None if stale is None else stale.task))
            self._runs[row["id"]] = _Run(task, sent + self.lease)
            self._held[row["id"]] = row["attempts"]
        if rows:
            self._check_leases_at(sent + self.lease)
            if len(rows) == free:
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
            self._let_go(job_id, number)
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
                    timeout=self.deadline,
                    role="koyojobs-worker",
                    settings={
                        "plan_cache_mode": "force_generic_plan",
                        "statement_timeout": str(int(self.deadline * 1000)),
                    },
                )
            try:
                async with asyncio.timeout(self.deadline):
                    return await self._conn.fetch(query, *args)
            except TimeoutError:
                self._drop_connection()
                raise TimeoutError(
                    f"the database did not answer within {self.deadline:g}s; reconnecting"
                ) from None
            except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
                self._drop_connection()
                raise

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

    async def _rescue(self) -> None:
        rows = await self._fetch(QUERIES["rescue_lapsed"])
        for row in rows:
            log.warning(
                "lease lapsed; job put back",
                extra={"job_id": row["id"], "queue": row["queue"], "status": row["status"]},
            )
        for queue in {row["queue"] for row in rows if row["status"] == Status.READY}:
            await self.broker.database.fetch_within(self.deadline, QUERIES["notify_queue"], queue)

    async def _look_after_table(self) -> None:
        try:
            task = await Vacuum.of(self.broker).check(
                self.vacuum_threshold, self._fetch, self.broker
            )
        except Exception:
            log.warning(
                "counting the jobs table's dead rows failed",
                exc_info=True,
                extra={"queue": self.queue},
            )
            return
        if task is not None:
            self._vacuum_task = task

    # -- running ------------------------------------------------------------

    async def _run(self, row: asyncpg.Record, stale: asyncio.Task[None] | None = None) -> None:
        job_id: int = row["id"]
        this = self._runs[job_id]
        assert self._executor is not None
        decision: Decision | None = None
        try:
            if stale is not None:
                await asyncio.wait([stale])
            # A job that blocks the event loop delays the claim's answer or this
            # first step: the lease may lapse before the run begins, and from
            # then on another worker may hold the job. Never begin it then.
            if this.cancelled or time.monotonic() + _TIMER_SLACK >= this.lease_deadline:
                this.cancelled = True
                await self._put_back_unbegun(row)
            else:
                this.begun = True
                started = time.monotonic()
                decision = await attempt(row, self.broker.serializer, self.broker, self._executor)
        except asyncio.CancelledError:
            # Stopped by stop() (released afterwards) or because the job is no
            # longer ours (cancelled or rescued): nothing to record.
            self._let_go(job_id, row["attempts"])
            return
        except Exception as exc:
            # attempt() decides for every row; should it raise all the same, the
            # job must still end: a held job's lease is renewed for ever.
            log.exception("attempt raised", extra={"job_id": job_id})
            decision = unreadable(f"job could not be run: {type(exc).__name__}")
        finally:
            run = self._runs.get(job_id)
            if run is not None and run.task is asyncio.current_task():
                del self._runs[job_id]
            else:
                run = None  # a newer claim of the job owns the entry
            self.wake()
        if run is None or run.cancelled or decision is None:
            self._let_go(job_id, row["attempts"])
            return
        self._decisions.append((job_id, row["attempts"], decision))
        _log_outcome(row, decision, time.monotonic() - started)

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
                self.deadline, QUERIES["release_unbegun"], row["id"], row["attempts"], self.id
            )
            if put_back:
                await database.fetch_within(
                    self.deadline, QUERIES["notify_queue"], put_back[0]["queue"]
                )
        except Exception:
            log.warning(
                "could not put the job back; it returns when its lease lapses",
                exc_info=True,
                extra={"job_id": row["id"]},
            )

    def _let_go(self, job_id: int, number: int) -> None:
        # Only this attempt's hold: the job may have been claimed again since.
        if self._held.get(job_id) == number:
            del self._held[job_id]

    # -- stopping -----------------------------------------------------------

    async def _write_remaining(self) -> None:
        failures = 0
        # Rounds that write go on (batches are bounded); failed ones are counted.
        while self._decisions and failures < _WRITE_TRIES_AT_STOP:
            try:
                await self._exchange(0)
            except Exception:
                log.warning("recording outcomes at stop failed", exc_info=True)
                # The database may be restarting: give it a moment before trying again.
                await asyncio.sleep(0.1 * 2**failures)
                failures += 1
        if not self._decisions:
            return
        log.error(
            "outcomes not recorded at stop; those jobs run again when their leases lapse",
            extra={"jobs": len(self._decisions)},
        )

    async def _release(self, job_ids: list[int]) -> None:
        try:
            database = self.broker.database
            rows = await database.fetch_within(
                self.deadline, QUERIES["release_jobs"], job_ids, self.id
            )
            for queue in {row["queue"] for row in rows}:
                await database.fetch_within(self.deadline, QUERIES["notify_queue"], queue)
        except Exception:
            log.warning(
                "could not put unfinished jobs back; they return when their leases lapse",
                exc_info=True,
                extra={"jobs": job_ids},
            )

    # -- leases -------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval = self.lease / 3
        while True:
            await asyncio.sleep(interval)  # the heartbeat's period, not a wait for a state
            if self._held:
                await self._heartbeat()

    def _check_leases_at(self, deadline: float) -> None:
        # A run stops the moment its lease may lapse, not at the next heartbeat
        # after it (nor after a renewal that hangs): another worker may rescue
        # the job from then on. Deadlines only move later (new claims, renewals),
        # so one timer at the earliest is enough; it re-arms for the next.
        if self._lease_timer is None:
            self._lease_timer = asyncio.get_running_loop().call_at(deadline, self._stop_lapsed_runs)

    def _stop_lapsed_runs(self) -> None:
        self._lease_timer = None
        # asyncio may fire a timer a hair early: never let that skip a run.
        now = time.monotonic() + _TIMER_SLACK
        for job_id, run in list(self._runs.items()):
            if run.lease_deadline <= now and not run.task.done() and not run.cancelled:
                log.warning("lease not renewed in time; stopping the job", extra={"job_id": job_id})
                _stop_run(run)
        pending = [r.lease_deadline for r in self._runs.values() if not r.cancelled]
        if pending:
            self._check_leases_at(min(pending))

    async def _heartbeat(self) -> None:
        runs = dict(self._runs)
        # Finished runs whose outcome is not yet written stay leased too, or a
        # slow write would let another worker run them again.
        ids = list(self._held)
        sent = time.monotonic()
        try:
            rows = await self._fetch(QUERIES["renew_leases"], ids, self.id, self.lease)
        except Exception:
            log.warning("lease renewal failed", exc_info=True, extra={"queue": self.queue})
            held = None
        else:
            held = {row["id"] for row in rows}
        now = time.monotonic()
        if held:
            self._check_leases_at(sent + self.lease)
        for job_id, run in runs.items():
            if self._runs.get(job_id) is not run:
                continue  # finished (its outcome is being recorded) or claimed again meanwhile
            if held is not None and job_id in held:
                run.lease_deadline = sent + self.lease
            elif held is not None or now >= run.lease_deadline:
                # Cancelled, or rescued by another worker (or about to be, while
                # the database is unreachable): stop, so it never runs twice at once.
                log.warning("job no longer held; stopping it", extra={"job_id": job_id})
                _stop_run(run)


def _log_outcome(row: asyncpg.Record, decision: Decision, seconds: float) -> None:
    # One line per finished attempt: INFO when done or retried, WARNING when failed.
    level = logging.WARNING if decision.status is Status.FAILED else logging.INFO
    if not log.isEnabledFor(level):
        return
    extra = {
        "job_id": row["id"],
        "job": row["name"],
        "queue": row["queue"],
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
            extra={**extra, "error": decision.error, "retry_in": f"{decision.delay:.1f}s"},
        )
    else:
        log.warning("job failed", extra={**extra, "error": decision.error})
