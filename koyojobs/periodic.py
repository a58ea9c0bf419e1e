"""Periodic jobs: when their ticks fall, and the ticker that enqueues them.

``define_job(cron=...)`` or ``define_job(every=...)`` gives a job a
:class:`Schedule`. Each running :class:`~koyojobs.Worker` runs a ticker for
the periodic jobs of its queue that its process has imported: it sleeps until
the next tick of any of them, then sends one statement that enqueues every
tick now due. The database makes each tick happen once however many tickers
race for it: a job's row in ``koyojobs_schedules`` holds its last tick, and
only the statement that moves it forward (under the row's lock) enqueues.
The row keeps no history, so pruning finished jobs cannot make an old tick
look new, and the table holds one row per periodic job.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import JobDefinitionError, log_trouble
from .lifecycle import cancel_and_wait, raise_if_stopping
from .registry import definitions
from .sql import QUERIES

if TYPE_CHECKING:
    from .broker import Broker
    from .jobs import JobDefinition

__all__ = ["Schedule", "Ticker", "make_schedule", "periodic_jobs", "run_now"]

log = logging.getLogger("koyojobs.periodic")

_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LONGEST_SLEEP = 60.0
_RETRY_AFTER_FAILURE = 1.0
"""Seconds between tries while the database is out of reach: ticks resume soon after."""
_EARLIEST_RETRY = 0.01
_JUST_AFTER = timedelta(microseconds=1)


@dataclass(frozen=True)
class Schedule:
    """When a periodic job's ticks fall: a cron expression in a zone, or a fixed interval.

    Example:
        >>> from datetime import datetime, UTC
        >>> s = make_schedule("doc.tick", lambda: None, cron="0 3 * * *", timezone="UTC")
        >>> s.latest_tick(datetime(2026, 5, 1, 12, 0, tzinfo=UTC)).isoformat()
        '2026-05-01T03:00:00+00:00'
    """

    cron: str | None
    every: float | None
    """The interval in seconds, for ``every=`` schedules."""
    timezone: str
    skip_if_running: bool

    @property
    def expression(self) -> str:
        """The schedule as a person would write it: the cron line, or ``every 30s``."""
        if self.cron is not None:
            return self.cron
        assert self.every is not None
        return f"every {self.every:g}s"

    def latest_tick(self, now: datetime) -> datetime:
        """The last tick at or before ``now`` (a UTC time)."""
        if self.every is not None:
            seconds = math.floor((now - _EPOCH).total_seconds() / self.every) * self.every
            return _EPOCH + timedelta(seconds=seconds)
        local = (now + _JUST_AFTER).astimezone(ZoneInfo(self.timezone))
        return next(CronSim(self._cron_fields, local, reverse=True)).astimezone(UTC)

    def next_tick(self, now: datetime) -> datetime:
        """The first tick after ``now`` (a UTC time)."""
        if self.every is not None:
            return self.latest_tick(now) + timedelta(seconds=self.every)
        local = now.astimezone(ZoneInfo(self.timezone))
        return next(CronSim(self._cron_fields, local)).astimezone(UTC)

    @property
    def _cron_fields(self) -> str:
        assert self.cron is not None
        return _ALIASES.get(self.cron.strip().lower(), self.cron)


def make_schedule(
    job_name: str,
    fn: Callable[..., Any],
    *,
    cron: object = None,
    every: object = None,
    timezone: object = "UTC",
    skip_if_running: object = True,
) -> Schedule | None:
    """Check ``define_job``'s periodic options; ``None`` for a job that is not periodic.

    Every problem is a :class:`JobDefinitionError` naming the job and the option.

    Example:
        >>> from datetime import timedelta
        >>> make_schedule("doc.sample", lambda: None, every=timedelta(seconds=30)).expression
        'every 30s'
    """

    def bad(message: str) -> JobDefinitionError:
        return JobDefinitionError(f"job {job_name!r}: {message}")

    if cron is None and every is None:
        if timezone != "UTC":
            raise bad(f"timezone={timezone!r} is given without cron=")
        return None
    if cron is not None and every is not None:
        raise bad("give cron= or every=, not both")
    if not isinstance(skip_if_running, bool):
        raise bad(f"skip_if_running={skip_if_running!r} is invalid: True or False")
    if not isinstance(timezone, str):
        raise bad(f"timezone={timezone!r} is invalid: an IANA zone name such as 'Europe/Amsterdam'")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise bad(f"timezone={timezone!r} is not a known zone") from None
    interval: float | None = None
    if every is not None:
        if timezone != "UTC":
            raise bad("timezone= goes with cron=; every= ticks on the epoch, in no zone")
        if not isinstance(every, timedelta):
            raise bad(f"every={every!r} is invalid: a timedelta (or pendulum Duration)")
        interval = every.total_seconds()
        if interval < 1:
            raise bad(f"every={every!r} is invalid: at least one second")
    if cron is not None:
        if not isinstance(cron, str):
            raise bad(f"cron={cron!r} is invalid: a 5-field cron expression")
        fields = _ALIASES.get(cron.strip().lower(), cron)
        try:
            CronSim(fields, datetime.now(UTC))
        except CronSimError as exc:
            raise bad(f"cron={cron!r} is invalid: {exc}") from None
    required = [
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    ]
    if required:
        raise bad(f"a periodic job takes no required arguments, and it requires {required}")
    return Schedule(
        cron=cron if isinstance(cron, str) else None,
        every=interval,
        timezone=timezone,
        skip_if_running=skip_if_running,
    )


def periodic_jobs(queue: str | None = None) -> list[JobDefinition[Any, Any]]:
    """The periodic jobs this process has imported (of ``queue``, if given), by name.

    Example:
        >>> [job.name for job in periodic_jobs("metrics")]  # doctest: +SKIP
        ['myapp.jobs.sample']
    """
    return sorted(
        (
            d
            for d in definitions()
            if d.schedule is not None and (queue is None or d.queue == queue)
        ),
        key=lambda d: d.name,
    )


class Ticker:
    """Enqueues the ticks of one queue's periodic jobs; a worker runs one.

    One statement per round, and a round only when a tick is due. Times
    come from the database's clock: every answer carries it, and the ticker
    keeps its offset from this machine's.
    """

    def __init__(self, broker: Broker, queue: str, *, idle_check: float, deadline: float) -> None:
        self.broker = broker
        self.queue = queue
        self._idle_check = idle_check
        self._deadline = deadline
        self._offset = 0.0
        """Seconds the database's clock is ahead of this machine's."""
        self._known: set[str] = set()
        self._done: dict[str, datetime] = {}
        """Per job, the last tick the database has (whoever enqueued it)."""
        self._task: asyncio.Task[None] | None = None
        self._woken = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"koyojobs-ticker-{self.queue}")

    def wake(self) -> None:
        """Look now (the database is back after an outage): ticks that fell in it are due."""
        self._woken.set()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def _now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self._offset)

    def _clock(self, sent: float, database_now: datetime) -> None:
        # The database read its clock about halfway through the round trip.
        midway = (sent + time.time()) / 2
        self._offset = database_now.timestamp() - midway

    async def _loop(self) -> None:
        failures = 0
        while True:
            self._woken.clear()
            try:
                wait = await self._round()
                if failures:
                    log.warning(
                        "enqueuing periodic jobs again",
                        extra={"queue": self.queue, "failed_rounds": failures},
                    )
                failures = 0
            except Exception as exc:
                raise_if_stopping(exc)
                failures += 1
                # Short, so that ticks resume soon after an outage; the claim
                # loops wake the ticker as soon as they reach the database.
                wait = min(_RETRY_AFTER_FAILURE, 0.1 * 2**failures)
                if failures == 1:
                    log_trouble(
                        log, "enqueuing periodic jobs failed; retrying", exc, queue=self.queue
                    )
            # Until the next tick (a clock), or until the claim loops say the
            # database is back.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._woken.wait()

    async def _round(self) -> float:
        jobs = periodic_jobs(self.queue)
        if not jobs:
            return self._idle_check
        new = [job for job in jobs if job.name not in self._known]
        if new:
            await self._register(new)
        now = self._now()
        due = [
            (job, tick)
            for job in jobs
            if (tick := _schedule(job).latest_tick(now)) > self._done.get(job.name, _EPOCH)
        ]
        if due:
            await self._enqueue(due)
        now = self._now()
        late = [tick for job, tick in due if self._done.get(job.name, _EPOCH) < tick]
        if late:
            # Due by this machine's reckoning, not yet by the database's clock.
            return _EARLIEST_RETRY
        soonest = min(_schedule(job).next_tick(now) for job in jobs)
        return min(_LONGEST_SLEEP, max(_EARLIEST_RETRY, (soonest - now).total_seconds()))

    async def _register(self, jobs: list[JobDefinition[Any, Any]]) -> None:
        # A job seen for the first time starts from its latest tick, not
        # enqueued: like cron, a schedule added at 14:00 for 03:00 first runs
        # tomorrow. A job already known keeps its row, so a restart catches up.
        now = self._now()
        sent = time.time()
        rows = await self.broker.database.fetch_within(
            self._deadline,
            QUERIES["register_schedules"],
            [job.name for job in jobs],
            [_schedule(job).latest_tick(now) for job in jobs],
            now,
        )
        self._clock(sent, rows[0]["now"])
        self._known.update(job.name for job in jobs)

    async def _enqueue(self, due: list[tuple[JobDefinition[Any, Any], datetime]]) -> None:
        sign = self.broker.serializer.sign_arguments
        calls = []
        for job, _ in due:
            call = job()
            call.consume()
            calls.append(call)
        sent = time.time()
        rows = await self.broker.database.fetch_within(
            self._deadline,
            QUERIES["enqueue_ticks"],
            [job.name for job, _ in due],
            [tick for _, tick in due],
            [job.queue for job, _ in due],
            [job.priority for job, _ in due],
            [job.max_attempts for job, _ in due],
            [sign(call.payload, call.definition.name) for call in calls],
            [_schedule(job).skip_if_running for job, _ in due],
            # A tick takes its job's limits; not its uniqueness, which
            # skip_if_running stands for.
            [call.limit_key for call in calls],
        )
        for row in rows:
            if row["last_tick"] is None:
                self._known.discard(row["name"])  # its row is gone: register again
            else:
                self._done[row["name"]] = row["last_tick"]
            if row["enqueued"]:
                log.debug("periodic job enqueued", extra={"job": row["name"]})
            elif row["skipped"]:
                log.info(
                    "periodic job skipped: its previous run has not finished",
                    extra={"job": row["name"]},
                )
        if rows:
            self._clock(sent, rows[0]["now"])


async def run_now(broker: Broker, job: JobDefinition[Any, Any]) -> int | None:
    """Enqueue the periodic ``job`` now, outside its schedule; returns the new id.

    With a tick's columns (its limits too). With ``skip_if_running`` (the
    default) nothing is enqueued while a run of it is ready or running
    (``None`` then). The run becomes the one its next tick looks at; the
    schedule itself goes on as it was.

    Example:
        >>> await run_now(broker, nightly_cleanup)  # doctest: +SKIP
        1042
    """
    call = job()
    call.consume()
    row = await broker.pool.fetchrow(
        QUERIES["run_schedule_now"],
        job.name,
        job.queue,
        job.priority,
        job.max_attempts,
        broker.serializer.sign_arguments(call.payload, job.name),
        call.limit_key,
        _schedule(job).skip_if_running,
    )
    return None if row is None else int(row["id"])


def _schedule(job: JobDefinition[Any, Any]) -> Schedule:
    assert job.schedule is not None
    return job.schedule
